using Dapper;
using Npgsql;

namespace Marketplace.Testing;

/// <summary>
/// A fresh database on the real PostgreSQL, laid out like the one <c>infra/servers.sh</c> makes (a schema owned by each
/// service's login, btree_gist), dropped again at the end. Each fixture gets its own, so tests never see each other's rows.
/// </summary>
public sealed class TestDatabase : IAsyncDisposable
{
    public string Name { get; }
    public ServerEndpoints Servers { get; }

    private TestDatabase(string name, ServerEndpoints servers)
    {
        Name = name;
        Servers = servers;
    }

    /// <summary>On the shared servers, or on <paramref name="servers"/> (a private pair).</summary>
    public static async Task<TestDatabase> CreateAsync(ServerEndpoints? servers = null)
    {
        servers ??= TestServers.Shared;
        var name = "t_" + Guid.NewGuid().ToString("N")[..16];
        await using (var admin = new NpgsqlConnection(servers.AdminConnectionString()))
        {
            await admin.ExecuteAsync($"CREATE DATABASE {name}");
        }
        await using (var db = new NpgsqlConnection(servers.AdminConnectionString(name)))
        {
            await db.ExecuteAsync("CREATE EXTENSION IF NOT EXISTS btree_gist");
            foreach (var s in TestServers.Services)
            {
                await db.ExecuteAsync($"""
                    DO $$ BEGIN
                      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{s}') THEN CREATE ROLE {s} LOGIN PASSWORD '{s}'; END IF;
                    END $$;
                    CREATE SCHEMA {s} AUTHORIZATION {s};
                    """);
            }
        }
        return new TestDatabase(name, servers);
    }

    public string ConnectionString(string service) => Servers.ServiceConnectionString(Name, service);

    /// <summary>A superuser connection to this database, for assertions that look across schemas.</summary>
    public NpgsqlConnection OpenAdmin()
    {
        var c = new NpgsqlConnection(Servers.AdminConnectionString(Name));
        c.Open();
        return c;
    }

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await using var admin = new NpgsqlConnection(Servers.AdminConnectionString());
        await admin.ExecuteAsync($"DROP DATABASE IF EXISTS {Name} WITH (FORCE)");
    }
}
