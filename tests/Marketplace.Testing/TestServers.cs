using Npgsql;

namespace Marketplace.Testing;

/// <summary>
/// Where the real PostgreSQL and RabbitMQ started by <c>infra/servers.sh</c> listen. The same environment variables
/// as the scripts, with the scripts' defaults.
/// </summary>
public static class TestServers
{
    public static string Env(string name, string fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : fallback;

    public static int PgPort => int.Parse(Env("MP_PG_PORT", "55432"));
    public static int RabbitPort => int.Parse(Env("MP_RABBIT_PORT", "55672"));
    public static int RabbitManagementPort => int.Parse(Env("MP_RABBIT_MGMT_PORT", "55673"));
    public static string RabbitUser => Env("MP_RABBIT_USER", "marketplace");
    public static string RabbitPassword => Env("MP_RABBIT_PASSWORD", "marketplace");

    /// <summary>The pair everyone shares (never stopped by a test).</summary>
    public static ServerEndpoints Shared => new(PgPort, RabbitPort, RabbitManagementPort);

    public static string AdminConnectionString(string database = "postgres") => Shared.AdminConnectionString(database);

    /// <summary>The connection string a service uses: its own login, which owns its own schema.</summary>
    public static string ServiceConnectionString(string database, string service) => Shared.ServiceConnectionString(database, service);

    public static readonly string[] Services = ["gateway", "listings", "bidding", "scheduling", "billing"];
}

/// <summary>
/// A PostgreSQL + RabbitMQ pair: the shared one (<see cref="TestServers.Shared"/>) or a private one that a fault
/// scenario may kill and restart. Logins are the scripts' (the same for every pair).
/// </summary>
public sealed record ServerEndpoints(int PgPort, int RabbitPort, int RabbitManagementPort)
{
    public string AdminConnectionString(string database = "postgres") => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = PgPort,
        Username = TestServers.Env("MP_PG_ADMIN_USER", "mp_admin"),
        Password = TestServers.Env("MP_PG_ADMIN_PASSWORD", "mp_admin"),
        Database = database,
        Pooling = false,
    }.ConnectionString;

    public string ServiceConnectionString(string database, string service) => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = PgPort,
        Username = service,
        Password = service,
        Database = database,
        MaxPoolSize = 10,
    }.ConnectionString;
}
