using System.Globalization;
using System.Text.RegularExpressions;

namespace Marketplace.Billing.Runs;

/// <summary>A billing period: a calendar month ("2026-11") or day ("2026-11-28"), UTC, half-open [From, To).</summary>
internal sealed partial record BillingPeriod(string Name, DateTime From, DateTime To)
{
    public static bool TryParse(string? text, out BillingPeriod period)
    {
        period = null!;
        if (text is null) return false;
        if (Month().IsMatch(text) && DateTime.TryParseExact(text, "yyyy-MM", CultureInfo.InvariantCulture,
                DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var month)
            && month < MaxValueMonth) // 9999-12 would end past DateTime.MaxValue: a problem, not a 500
        {
            period = new BillingPeriod(text, month, month.AddMonths(1));
            return true;
        }
        if (Day().IsMatch(text) && DateTime.TryParseExact(text, "yyyy-MM-dd", CultureInfo.InvariantCulture,
                DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var day)
            && day < DateTime.MaxValue.Date)
        {
            period = new BillingPeriod(text, day, day.AddDays(1));
            return true;
        }
        return false;
    }

    private static readonly DateTime MaxValueMonth = new(9999, 12, 1, 0, 0, 0, DateTimeKind.Utc);

    [GeneratedRegex(@"^\d{4}-\d{2}$")] private static partial Regex Month();
    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}$")] private static partial Regex Day();
}
