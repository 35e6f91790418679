using Marketplace.Listings;
using Marketplace.ServiceDefaults.Hosting;

var builder = WebApplication.CreateBuilder(args);
builder.AddListingsServices();

var app = builder.Build();
app.MapServiceDefaults();
app.MapListingsApi();
await app.RunServiceAsync(typeof(Program).Assembly);

public partial class Program;
