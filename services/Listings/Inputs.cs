using System.Text.RegularExpressions;

namespace Marketplace.Listings;

/// <summary>Formats of the identifiers the public API accepts, shared by the slices that take them.</summary>
internal static partial class Inputs
{
    /// <summary>Lower-case words joined by dashes, as cloud regions are spelled (cn-east, us-west-2).</summary>
    [GeneratedRegex("^[a-z0-9]+(-[a-z0-9]+)*$")]
    public static partial Regex Region();

    /// <summary>ISO 3166-1 alpha-2 country code.</summary>
    [GeneratedRegex("^[A-Z]{2}$")]
    public static partial Regex Jurisdiction();

    /// <summary>ISO 4217 currency code.</summary>
    [GeneratedRegex("^[A-Z]{3}$")]
    public static partial Regex Currency();

    /// <summary>An RFC 1123 host name (labels of letters, digits and inner dashes).</summary>
    [GeneratedRegex("^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")]
    public static partial Regex Hostname();

    public const string RegionRule = "lower-case letters and digits in dash-separated words, at most 64 characters, e.g. cn-east";
    public const string JurisdictionRule = "an ISO 3166-1 alpha-2 country code in upper case, e.g. CN, DE, US";
    public const string CurrencyRule = "an ISO 4217 code of 3 upper-case letters, e.g. CNY";

    public static bool IsRegion(string? s) => s is { Length: <= 64 } && Region().IsMatch(s);
    public static bool IsJurisdiction(string? s) => s is not null && Jurisdiction().IsMatch(s);
    public static bool IsCurrency(string? s) => s is not null && Currency().IsMatch(s);

    /// <summary>PostgreSQL keeps microseconds; "now" is cut to them so a response equals what a later read returns.</summary>
    public static DateTimeOffset ToMicroseconds(this DateTimeOffset t) => t.AddTicks(-(t.Ticks % 10)).ToUniversalTime();
}

/// <summary>Money as a request carries it: both parts may be missing and are validated, not assumed.</summary>
public sealed record MoneyInput(long? Amount, string? Currency);
