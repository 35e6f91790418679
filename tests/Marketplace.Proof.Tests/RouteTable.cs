using System.Reflection;
using System.Text.RegularExpressions;
using Marketplace.Testing;

namespace Marketplace.Proof.Tests;

/// <summary>
/// The gateway's own route table (Marketplace.Gateway.Proxy.PublicRoutes.All), read from the built gateway assembly, so
/// the role matrix follows whatever routes the gateway serves without a copy that could drift.
/// </summary>
public sealed record GatewayRoute(string Id, string PathPrefix, string[] Roles, string[]? Methods)
{
    public static readonly string[] AllRoles = ["renter", "provider", "finance", "admin"];

    public static IReadOnlyList<GatewayRoute> Load()
    {
        var assembly = Assembly.LoadFrom(RepoPaths.ServiceDll("Gateway"));
        var type = assembly.GetType("Marketplace.Gateway.Proxy.PublicRoutes", throwOnError: true)!;
        var all = (Array)type.GetField("All", BindingFlags.Public | BindingFlags.Static)!.GetValue(null)!;
        return all.Cast<object>().Select(r =>
        {
            var t = r.GetType();
            string Prop(string name) => (string)t.GetProperty(name)!.GetValue(r)!;
            var path = Prop("Path");
            return new GatewayRoute(Prop("Id"), Regex.Replace(path, @"/\{\*\*\w+\}$", ""),
                (string[])t.GetProperty("Roles")!.GetValue(r)!, (string[]?)t.GetProperty("Methods")!.GetValue(r));
        }).ToList();
    }

    public bool Matches(string method, string path) =>
        (path == PathPrefix || path.StartsWith(PathPrefix + "/", StringComparison.Ordinal))
        && (Methods is null || Methods.Contains(method, StringComparer.OrdinalIgnoreCase));

    /// <summary>The route that serves (method, path) and the roles it admits (empty: any org).</summary>
    public static GatewayRoute? For(IReadOnlyList<GatewayRoute> routes, string method, string path) =>
        routes.FirstOrDefault(r => r.Matches(method, path));

    public bool Admits(string role) => Roles.Length == 0 || Roles.Contains(role);
}
