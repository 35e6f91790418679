using System.Buffers.Text;
using System.Globalization;
using System.Text;

namespace Marketplace.Listings;

/// <summary>A keyset cursor: which listing (or sort) it belongs to, the last row's sort key and id.</summary>
internal sealed record Cursor(string Kind, long Key, Guid Id)
{
    public const int DefaultLimit = 20;
    public const int MaxLimit = 100;

    public string Encode() =>
        Base64Url.EncodeToString(Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{Kind}|{Key}|{Id}")));

    /// <summary>The cursor, or null when the text is not one (a 400 for the caller).</summary>
    public static Cursor? Decode(string s)
    {
        try
        {
            var parts = Encoding.UTF8.GetString(Base64Url.DecodeFromChars(s)).Split('|');
            return parts.Length == 3 && long.TryParse(parts[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var key)
                && Guid.TryParse(parts[2], out var id) && key >= -1 && key <= DateTimeOffset.MaxValue.UtcTicks
                ? new Cursor(parts[0], key, id)
                : null;
        }
        catch (FormatException)
        {
            return null;
        }
    }
}
