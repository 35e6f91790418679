using System.Globalization;

namespace Marketplace.Billing.Domain;

/// <summary>ISO 4217 minor-unit exponents, used only to show amounts to people (the ledger never needs them).</summary>
public static class Currencies
{
    private static readonly HashSet<string> ZeroDecimal =
        ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"];

    private static readonly HashSet<string> ThreeDecimal = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

    public static int Exponent(string currency) =>
        ZeroDecimal.Contains(currency) ? 0 : ThreeDecimal.Contains(currency) ? 3 : 2;

    /// <summary>1235 CNY → "12.35 CNY"; 1235 JPY → "1235 JPY".</summary>
    public static string Format(long minor, string currency)
    {
        var exponent = Exponent(currency);
        var value = (decimal)minor / (decimal)Math.Pow(10, exponent);
        return value.ToString("F" + exponent, CultureInfo.InvariantCulture) + " " + currency;
    }

    public static bool IsCode(string? currency) =>
        currency is { Length: 3 } && currency.All(c => c is >= 'A' and <= 'Z');
}
