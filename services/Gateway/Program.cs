using Marketplace.Gateway;
using Marketplace.ServiceDefaults.Hosting;

var builder = WebApplication.CreateBuilder(args);
builder.AddGatewayServices();

var app = builder.Build();
app.MapServiceDefaults(behindGateway: false);
app.MapGatewayApi();
await app.RunServiceAsync(typeof(Program).Assembly);

public partial class Program;
