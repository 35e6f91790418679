using System.CommandLine;
using Marketplace.AgentSim;

var gateway = new Option<string>("--gateway") { Description = "The gateway's base URL", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
var providerKey = new Option<string>("--provider-key") { Description = "An API key of a provider organisation", Required = true };
var fleet = new Option<string>("--fleet") { Description = "model:nodes[:accelerators-per-node], comma-separated", DefaultValueFactory = _ => "h100-sxm:4,ascend-910b:4" };
var clusters = new Option<int>("--clusters") { Description = "Clusters to register, each with the whole fleet", DefaultValueFactory = _ => 1 };
var name = new Option<string>("--cluster-name") { Description = "Cluster name (a suffix is added for several)", DefaultValueFactory = _ => "sim" };
var region = new Option<string>("--region") { DefaultValueFactory = _ => "cn-east" };
var jurisdiction = new Option<string>("--jurisdiction") { DefaultValueFactory = _ => "CN" };
var fabric = new Option<string>("--fabric") { Description = "infiniband, roce or ethernet", DefaultValueFactory = _ => "infiniband" };
var fabricGbps = new Option<int>("--fabric-gbps") { DefaultValueFactory = _ => 400 };
var interval = new Option<double>("--interval-seconds") { Description = "Seconds between heartbeats", DefaultValueFactory = _ => 5 };
var mismatch = new Option<int>("--mismatch") { Description = "Nodes that report one accelerator fewer than declared" };
var dead = new Option<int>("--dead") { Description = "Nodes that heartbeat once and then fall silent" };
var concurrency = new Option<int>("--concurrency") { DefaultValueFactory = _ => 16 };
var lockstep = new Option<bool>("--lockstep") { Description = "Every node heartbeats at the same instant (default: each node at its own phase, spread over the interval)" };
var once = new Option<bool>("--once") { Description = "Register, heartbeat once and exit" };
var root = new RootCommand("Simulates provider node agents: registers a fleet through the gateway and heartbeats it.")
{
    gateway, providerKey, fleet, clusters, name, region, jurisdiction, fabric, fabricGbps, interval, lockstep, mismatch, dead, concurrency, once,
};
root.SetAction(async (result, ct) =>
{
    try
    {
        using var sim = new AgentSimulator(new AgentSimOptions
        {
            Gateway = new Uri(result.GetValue(gateway)!),
            ProviderKey = result.GetValue(providerKey)!,
            Fleet = FleetEntry.Parse(result.GetValue(fleet)!),
            Clusters = result.GetValue(clusters),
            ClusterName = result.GetValue(name)!,
            Region = result.GetValue(region)!,
            Jurisdiction = result.GetValue(jurisdiction)!,
            Fabric = result.GetValue(fabric)!,
            FabricGbps = result.GetValue(fabricGbps),
            HeartbeatInterval = TimeSpan.FromSeconds(result.GetValue(interval)),
            Lockstep = result.GetValue(lockstep),
            Mismatched = result.GetValue(mismatch),
            Dead = result.GetValue(dead),
            Concurrency = result.GetValue(concurrency),
        }, Console.Out);
        if (result.GetValue(once))
        {
            await sim.RegisterAsync(ct);
            await sim.HeartbeatOnceAsync(first: true, ct);
        }
        else await sim.RunAsync(ct);
        Console.WriteLine($"{sim.HeartbeatsSent} heartbeats sent, {sim.HeartbeatsFailed} failed");
        foreach (var node in sim.Nodes)
            Console.WriteLine($"{node.NodeId} {node.Hostname} {node.AcceleratorCount}×{node.Model}{(node.Mismatched ? " (misreports)" : "")}{(node.Dead ? " (silent)" : "")}");
        return 0;
    }
    catch (Exception ex) when (ex is SimulatorException or FormatException or InvalidOperationException or HttpRequestException)
    {
        Console.Error.WriteLine($"agent-sim failed: {ex.Message}");
        return 1;
    }
});
return await root.Parse(args).InvokeAsync();
