using Marketplace.Scheduling;
using Marketplace.ServiceDefaults.Hosting;

var builder = WebApplication.CreateBuilder(args);
builder.AddSchedulingServices();

var app = builder.Build();
app.MapServiceDefaults();
app.MapSchedulingApi();
await app.RunServiceAsync(typeof(Program).Assembly);

public partial class Program;
