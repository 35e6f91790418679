using Xunit;

namespace Marketplace.Gateway.Tests;

public sealed class ApiKeysTests
{
    [Fact]
    public void A_generated_key_parses_back_to_its_prefix_and_matches_only_its_own_hash()
    {
        var key = ApiKeys.Generate();
        Assert.True(ApiKeys.TryParse(key.Key, out var prefix, out var secret));
        Assert.Equal(key.Prefix, prefix);
        Assert.True(ApiKeys.Matches(secret, key.SecretHash));
        Assert.False(ApiKeys.Matches(secret, ApiKeys.Generate().SecretHash));
        Assert.True(secret.Length >= 43); // 32 random bytes
    }

    [Theory]
    [InlineData("")]
    [InlineData("mk_")]
    [InlineData("mk__secret")]
    [InlineData("mk_prefix_")]
    [InlineData("sk_prefix_secret")]
    public void Malformed_keys_do_not_parse(string key) => Assert.False(ApiKeys.TryParse(key, out _, out _));
}
