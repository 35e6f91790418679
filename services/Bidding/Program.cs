using Marketplace.Bidding;
using Marketplace.ServiceDefaults.Hosting;

var builder = WebApplication.CreateBuilder(args);
builder.AddBiddingServices();

var app = builder.Build();
app.MapServiceDefaults();
app.MapBiddingApi();
await app.RunServiceAsync(typeof(Program).Assembly);

public partial class Program;
