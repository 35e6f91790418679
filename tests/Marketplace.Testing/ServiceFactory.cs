using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Testing;

/// <summary>
/// One service in-process (ASP.NET Core's test server) on the real PostgreSQL and RabbitMQ: its own fresh database
/// and virtual host, so a test sees exactly the rows and messages it caused.
/// </summary>
public class ServiceFactory<TProgram>(string service, TestDatabase database, TestVirtualHost vhost,
    Action<IServiceCollection>? configureServices = null, IDictionary<string, string?>? settings = null)
    : WebApplicationFactory<TProgram> where TProgram : class
{
    public TestDatabase Database => database;
    public TestVirtualHost VirtualHost => vhost;

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Testing");
        builder.UseSetting("ConnectionStrings:Postgres", database.ConnectionString(service));
        builder.UseSetting("RabbitMq:Port", TestServers.RabbitPort.ToString());
        builder.UseSetting("RabbitMq:VirtualHost", vhost.Name);
        builder.UseSetting("RabbitMq:Username", TestServers.RabbitUser);
        builder.UseSetting("RabbitMq:Password", TestServers.RabbitPassword);
        builder.UseSetting("Gateway:InternalToken", "test-gateway-token");
        foreach (var (k, v) in settings ?? new Dictionary<string, string?>()) builder.UseSetting(k, v);
        if (configureServices is not null) builder.ConfigureServices(configureServices);
    }

    /// <summary>A client that calls the service as the gateway would on behalf of <paramref name="org"/>.</summary>
    public HttpClient ClientFor(Guid org, params string[] roles)
    {
        var client = CreateClient();
        client.DefaultRequestHeaders.Add(Caller.GatewayTokenHeader, "test-gateway-token");
        client.DefaultRequestHeaders.Add(Caller.OrgHeader, org.ToString());
        client.DefaultRequestHeaders.Add(Caller.RolesHeader, string.Join(',', roles));
        return client;
    }
}
