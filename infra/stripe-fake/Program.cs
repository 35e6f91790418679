using Microsoft.AspNetCore.Hosting;

namespace Marketplace.StripeFake;

internal static class Program
{
    public static async Task Main(string[] args) =>
        await StripeFakeApp.Build(args, b =>
        {
            // Stripe-mock's port unless ASPNETCORE_URLS / --urls says otherwise.
            if (string.IsNullOrEmpty(b.Configuration["urls"])) b.WebHost.UseUrls("http://127.0.0.1:12111");
        }).RunAsync();
}
