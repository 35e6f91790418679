using System.CommandLine;
using Marketplace.Demo;

var gateway = new Option<string>("--gateway") { Description = "The gateway's base URL", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
var adminKey = new Option<string>("--admin-key") { Description = "The bootstrap admin API key", Required = true };
var leaseSeconds = new Option<int>("--lease-seconds") { Description = "Length of the demo lease (the marketplace's minimum lease)", DefaultValueFactory = _ => 60 };
var root = new RootCommand("Runs the Marketplace demo scenario against a running gateway and prints what happened.") { gateway, adminKey, leaseSeconds };
root.SetAction(async (result, ct) =>
{
    var scenario = new DemoScenario(new Uri(result.GetValue(gateway)!), result.GetValue(adminKey)!, Console.Out);
    try
    {
        await scenario.RunAsync(result.GetValue(leaseSeconds), ct);
        Console.WriteLine("\nDemo complete: listed, ordered, placed (a 16-GPU gang too), preempted with notice, replaced after a node failure, run, invoiced and paid out.");
        return 0;
    }
    catch (Exception ex) when (ex is ApiException or TimeoutException or InvalidOperationException)
    {
        Console.Error.WriteLine($"\nDemo failed: {ex.Message}");
        return 1;
    }
});
return await root.Parse(args).InvokeAsync();
