using System.Reflection;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Marketplace.ServiceDefaults.Data;

public static class DatabaseExtensions
{
    /// <summary>
    /// One <see cref="NpgsqlDataSource"/> for the service, bound to its own schema, from ConnectionStrings:Postgres.
    /// </summary>
    public static IHostApplicationBuilder AddServiceDatabase(this IHostApplicationBuilder builder, string schema)
    {
        var connectionString = builder.Configuration.GetConnectionString("Postgres")
            ?? throw new InvalidOperationException("ConnectionStrings:Postgres is not set.");
        Dapper.DefaultTypeMap.MatchNamesWithUnderscores = true;
        Dapper.SqlMapper.AddTypeHandler(new DateTimeOffsetHandler());
        var csb = new NpgsqlConnectionStringBuilder(connectionString) { SearchPath = $"{schema},public" };
        // A service runs the same few dozen statements over and over (an order, a placement, a hold, a heartbeat): Npgsql
        // prepares each one a connection has run twice, so PostgreSQL parses and plans it once per connection instead of
        // every time (docs/performance.md, System load, "Heartbeats, prepared statements everywhere"). A connection string
        // that sets Max Auto Prepare itself is left alone.
        if (csb.MaxAutoPrepare == 0)
        {
            csb.MaxAutoPrepare = 64;
            csb.AutoPrepareMinUsages = 2;
        }
        // A connection handed back to the pool is not reset: Npgsql would otherwise prepend seven statements (RESET ALL,
        // SET SESSION AUTHORIZATION DEFAULT, pg_advisory_unlock_all() and four more) to the next command of every pooled
        // connection, more than half of all the statements PostgreSQL ran under load (docs/performance.md, System load,
        // "Pooled connections not reset"). Nothing the services run leaves session state behind: settings are SET LOCAL,
        // advisory locks are transaction-scoped but for the billing run's, which it releases itself, and the migrations'
        // connections are closed for good after them (MigrateDatabase).
        csb.NoResetOnClose = true;
        builder.Services.AddSingleton(new ServiceSchema(schema));
        builder.Services.AddSingleton(sp => new NpgsqlDataSourceBuilder(csb.ConnectionString)
            .UseLoggerFactory(sp.GetRequiredService<ILoggerFactory>())
            .Build());
        builder.Services.AddSingleton<Db>();
        return builder;
    }

    /// <summary>
    /// Applies the shared messaging migrations and the service's own (embedded <c>Migrations/V*.sql</c>) with Evolve.
    /// Several instances starting at once are serialised by Evolve's own lock.
    /// </summary>
    public static void MigrateDatabase(this IServiceProvider services, Assembly serviceAssembly)
    {
        var schema = services.GetRequiredService<ServiceSchema>().Name;
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("Migrations");
        var dataSource = services.GetRequiredService<NpgsqlDataSource>();
        using var connection = dataSource.CreateConnection();
        // The database is named, not detected: detection tries MySQL's "SHOW VARIABLES" first, which PostgreSQL logs as an
        // ERROR at every start of every service.
        var evolve = new EvolveDb.Evolve(connection, msg => logger.LogInformation("{Migration}", msg), EvolveDb.Dialect.DBMS.PostgreSQL)
        {
            EmbeddedResourceAssemblies = [typeof(DatabaseExtensions).Assembly, serviceAssembly],
            Schemas = [schema],
            MetadataTableSchema = schema,
            MetadataTableName = "schema_history",
            IsEraseDisabled = true,
        };
        evolve.Migrate();
        // Evolve sets the session's search path and takes a session lock; pooled connections are not reset when handed
        // back (AddServiceDatabase), so the connections it used are closed rather than reused.
        connection.Close();
        dataSource.Clear();
    }
}

public sealed record ServiceSchema(string Name);
