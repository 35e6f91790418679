using Marketplace.Testing;
using Xunit;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>A fresh database and RabbitMQ vhost on the real servers for every test of the class, dropped after it.</summary>
public abstract class ServersPerTest : IAsyncLifetime
{
    protected TestDatabase _db = null!;
    protected TestVirtualHost _vhost = null!;

    public async Task InitializeAsync()
    {
        _db = await TestDatabase.CreateAsync();
        _vhost = await TestVirtualHost.CreateAsync();
    }

    public async Task DisposeAsync()
    {
        await _vhost.DisposeAsync();
        await _db.DisposeAsync();
    }
}
