using System.Globalization;

namespace Marketplace.Load;

/// <summary>The kinds of order a renter places; each is a row of the report.</summary>
internal enum OrderKind { OnDemand, ReservedFixed, ReservedFlexible, Interruptible }

/// <summary>
/// How the orders divide between the kinds, as relative weights: "on_demand=50,reserved_fixed=15,reserved_flexible=15,interruptible=20".
/// The n-th order goes to the kind furthest behind its share, so every prefix of the run follows the mix as closely as
/// whole orders allow (no randomness: two runs place the same sequence).
/// </summary>
internal sealed class OrderMix
{
    public const string Default = "on_demand=50,reserved_fixed=15,reserved_flexible=15,interruptible=20";

    private readonly double[] _share;
    private readonly int[] _placed;

    private OrderMix(double[] share)
    {
        _share = share;
        _placed = new int[share.Length];
    }

    public static string Name(OrderKind kind) => kind switch
    {
        OrderKind.OnDemand => "on_demand",
        OrderKind.ReservedFixed => "reserved_fixed",
        OrderKind.ReservedFlexible => "reserved_flexible",
        OrderKind.Interruptible => "interruptible",
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    public double Share(OrderKind kind) => _share[(int)kind];

    public IEnumerable<OrderKind> Kinds => Enum.GetValues<OrderKind>().Where(k => Share(k) > 0);

    public static OrderMix Parse(string text)
    {
        var weights = new double[Enum.GetValues<OrderKind>().Length];
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var bits = part.Split('=');
            var kind = Enum.GetValues<OrderKind>().Where(k => Name(k) == bits[0]).Cast<OrderKind?>().FirstOrDefault();
            if (bits.Length != 2 || kind is null || !double.TryParse(bits[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var w) || w < 0)
                throw new FormatException($"'{part}' is not kind=weight with kind one of on_demand, reserved_fixed, reserved_flexible, interruptible.");
            weights[(int)kind.Value] = w;
        }
        var total = weights.Sum();
        if (total <= 0) throw new FormatException("The order mix is empty; give e.g. " + Default + ".");
        return new OrderMix(weights.Select(w => w / total).ToArray());
    }

    /// <summary>The kind of the next order.</summary>
    public OrderKind Next()
    {
        var n = _placed.Sum() + 1;
        var kind = Enumerable.Range(0, _share.Length).Where(k => _share[k] > 0).MaxBy(k => _share[k] * n - _placed[k]);
        _placed[kind]++;
        return (OrderKind)kind;
    }
}
