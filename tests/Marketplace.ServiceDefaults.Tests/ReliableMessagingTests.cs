using Xunit;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>Outbox and inbox on the real PostgreSQL and RabbitMQ.</summary>
public sealed class ReliableMessagingTests : ServersPerTest
{
    private static OfferWithdrawn Message() => new(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow);

    private async Task<long> EffectsAsync(Guid key)
    {
        await using var c = _db.OpenAdmin();
        return await c.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects WHERE key = @k", new { k = key.ToString() });
    }

    private async Task<long> OutboxRowsAsync()
    {
        await using var c = _db.OpenAdmin();
        return await c.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.outbox");
    }

    private static async Task WriteToOutboxAsync(IServiceProvider services, OfferWithdrawn message)
    {
        var db = services.GetRequiredService<Db>();
        await using var tx = await db.BeginAsync(CancellationToken.None);
        await tx.PublishAsync(message, CancellationToken.None);
        await tx.CommitAsync(CancellationToken.None);
    }

    [Fact]
    public async Task The_same_message_delivered_three_times_has_one_effect()
    {
        await using var app = ProbeHost.Build(_db, _vhost);
        await app.StartAsync();
        await app.Services.WaitForBusAsync();
        var bus = app.Services.GetRequiredService<IBus>();
        var deliveries = app.Services.GetRequiredService<Deliveries>();
        var message = Message();
        var messageId = NewId.NextGuid();

        for (var i = 0; i < 3; i++)
            await bus.Publish(message, ctx => ctx.MessageId = messageId);

        await Eventually.True(() => Task.FromResult(deliveries.Finished(message.OfferId) == 3), what: "three deliveries, each committed or rolled back");
        Assert.Equal(1, await EffectsAsync(message.OfferId));
        await app.StopAsync();
    }

    [Fact]
    public async Task A_crash_between_commit_and_publish_still_delivers_once()
    {
        var message = Message();
        // The first instance commits the state change with its outbox row and dies before its relay ran.
        await using (var crashed = ProbeHost.Build(_db, _vhost))
        {
            await WriteToOutboxAsync(crashed.Services, message);
        }
        Assert.Equal(1, await OutboxRowsAsync());

        // Another instance starts: its relay finds the row and publishes it; the consumer applies it once.
        await using var restarted = ProbeHost.Build(_db, _vhost);
        await restarted.StartAsync();
        await restarted.Services.WaitForBusAsync();
        await Eventually.True(async () => await EffectsAsync(message.OfferId) == 1, what: "the effect");
        await Eventually.True(async () => await OutboxRowsAsync() == 0, what: "the outbox to drain");
        await Task.Delay(500);
        Assert.Equal(1, restarted.Services.GetRequiredService<Deliveries>().Count(message.OfferId));
        await restarted.StopAsync();
    }

    [Fact]
    public async Task A_relay_that_published_but_crashed_before_marking_sent_causes_no_second_effect()
    {
        var message = Message();
        await using var app = ProbeHost.Build(_db, _vhost);
        await WriteToOutboxAsync(app.Services, message);
        // The crashed relay's publish reached the broker, with the row's message id; the row is still there.
        await using (var c = _db.OpenAdmin())
        {
            var id = await c.ExecuteScalarAsync<Guid>("SELECT message_id FROM listings.outbox");
            var bus = app.Services.GetRequiredService<IBus>();
            await app.StartAsync();
        await app.Services.WaitForBusAsync();
            await bus.Publish(message, ctx => ctx.MessageId = id);
        }
        var deliveries = app.Services.GetRequiredService<Deliveries>();
        await Eventually.True(() => Task.FromResult(deliveries.Count(message.OfferId) == 2), what: "both deliveries");
        Assert.Equal(1, await EffectsAsync(message.OfferId));
        await Eventually.True(async () => await OutboxRowsAsync() == 0, what: "the outbox to drain");
        await app.StopAsync();
    }

    [Fact]
    public async Task A_broker_outage_delays_delivery_and_loses_nothing()
    {
        var message = Message();
        // The broker is unreachable for this instance: its relay keeps the row and keeps retrying.
        await using (var cutOff = ProbeHost.Build(_db, _vhost, rabbitPort: 1))
        {
            await cutOff.StartAsync();
            await WriteToOutboxAsync(cutOff.Services, message);
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.Equal(1, await OutboxRowsAsync());
            await cutOff.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
        }
        Assert.Equal(0, await EffectsAsync(message.OfferId));

        // The broker is back: the message arrives, once.
        await using var app = ProbeHost.Build(_db, _vhost);
        await app.StartAsync();
        await app.Services.WaitForBusAsync();
        await Eventually.True(async () => await EffectsAsync(message.OfferId) == 1, what: "the delayed effect");
        await Eventually.True(async () => await OutboxRowsAsync() == 0, what: "the outbox to drain");
        await app.StopAsync();
    }

    [Fact]
    public async Task Closing_every_broker_connection_mid_stream_loses_and_duplicates_nothing()
    {
        await using var app = ProbeHost.Build(_db, _vhost);
        await app.StartAsync();
        await app.Services.WaitForBusAsync();
        var messages = Enumerable.Range(0, 200).Select(_ => Message()).ToList();
        var writer = Task.Run(async () =>
        {
            foreach (var m in messages) await WriteToOutboxAsync(app.Services, m);
        });
        await Task.Delay(200);
        await _vhost.CloseConnectionsAsync();
        await writer;
        await Task.Delay(300);
        await _vhost.CloseConnectionsAsync();

        await using var c = _db.OpenAdmin();
        await Eventually.True(async () => await c.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects") == messages.Count,
            TimeSpan.FromSeconds(60), "every effect");
        await Eventually.True(async () => await OutboxRowsAsync() == 0, what: "the outbox to drain");
        var keys = messages.Select(m => m.OfferId.ToString()).ToArray();
        Assert.Equal(messages.Count, await c.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects WHERE key = ANY(@keys)", new { keys }));
        await app.StopAsync();
    }
}
