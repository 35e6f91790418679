using System.Reflection;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using Xunit;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>
/// A publish whose confirm never comes (RabbitMQ.Client 7.2 after its connection was closed under it: the closed-connections
/// fault scenario stopped a relay for good that way) must not stop the relay.
/// </summary>
public sealed class OutboxRelayTimeoutTests : ServersPerTest
{
    [Fact]
    public async Task A_publish_that_never_gets_its_confirm_times_out_and_its_row_stays_for_the_next_batch()
    {
        await using var app = ProbeHost.Build(_db, _vhost);
        var db = app.Services.GetRequiredService<Db>();
        await using (var tx = await db.BeginAsync(CancellationToken.None))
        {
            await tx.PublishAsync(new OfferWithdrawn(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow), CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }
        var relay = new OutboxRelay(app.Services.GetRequiredService<NpgsqlDataSource>(), HangingBus.Create(),
            app.Services.GetRequiredService<IBusControl>(), app.Services.GetRequiredService<OutboxSignal>(),
            Options.Create(new OutboxOptions { PublishTimeout = TimeSpan.FromSeconds(1) }), NullLogger<OutboxRelay>.Instance);

        // Without the limit this batch never ends (and WaitAsync throws a TimeoutException instead).
        await Assert.ThrowsAsync<InvalidOperationException>(() => relay.RelayBatchAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));

        await using var c = _db.OpenAdmin();
        var row = await c.QuerySingleAsync<(int Attempts, string LastError)>("SELECT attempts, last_error FROM listings.outbox");
        Assert.Equal(1, row.Attempts);
        Assert.Contains("timed out", row.LastError, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>A bus whose every publish waits for ever.</summary>
    public class HangingBus : DispatchProxy
    {
        public static IBus Create() => DispatchProxy.Create<IBus, HangingBus>();

        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args) =>
            targetMethod?.ReturnType == typeof(Task) ? new TaskCompletionSource().Task : throw new NotSupportedException(targetMethod?.Name);
    }
}
