using System.Security.Cryptography;
using System.Text;

namespace Marketplace.Gateway;

/// <summary>
/// API keys look like <c>mk_&lt;prefix&gt;_&lt;secret&gt;</c>: the prefix finds the row, the secret is checked against its
/// SHA-256. The secret is 32 random bytes, so a fast hash is enough (nothing to brute-force) and a stolen table is useless.
/// </summary>
internal static class ApiKeys
{
    private const string Scheme = "mk_";
    private const string PrefixAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";

    public sealed record NewKey(string Prefix, string Key, byte[] SecretHash);

    public static NewKey Generate()
    {
        // The prefix avoids '_' (the separator); the secret may contain it, it is everything after the second '_'.
        var prefix = RandomNumberGenerator.GetString(PrefixAlphabet, 10);
        var secret = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        return new NewKey(prefix, $"{Scheme}{prefix}_{secret}", Hash(secret));
    }

    public static bool TryParse(string key, out string prefix, out string secret)
    {
        prefix = secret = "";
        if (!key.StartsWith(Scheme, StringComparison.Ordinal)) return false;
        var separator = key.IndexOf('_', Scheme.Length);
        if (separator <= Scheme.Length || separator == key.Length - 1 || separator - Scheme.Length > 32) return false;
        prefix = key[Scheme.Length..separator];
        secret = key[(separator + 1)..];
        return true;
    }

    public static byte[] Hash(string secret) => SHA256.HashData(Encoding.UTF8.GetBytes(secret));

    public static bool Matches(string secret, byte[] storedHash) =>
        CryptographicOperations.FixedTimeEquals(Hash(secret), storedHash);
}
