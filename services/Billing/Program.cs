using Marketplace.Billing;
using Marketplace.ServiceDefaults.Hosting;

var builder = WebApplication.CreateBuilder(args);
builder.AddBillingServices();

var app = builder.Build();
app.MapServiceDefaults();
app.MapBillingApi();
await app.RunServiceAsync(typeof(Program).Assembly);

public partial class Program;
