using System.Data;
using Dapper;

namespace Marketplace.Listings;

/// <summary>
/// Npgsql reads timestamptz as a UTC <see cref="DateTime"/>, while the API and the contracts speak
/// <see cref="DateTimeOffset"/>; this lets Dapper fill DateTimeOffset properties. Writes stay UTC (Npgsql refuses others).
/// </summary>
internal sealed class DateTimeOffsetHandler : SqlMapper.TypeHandler<DateTimeOffset>
{
    public static void Register() => SqlMapper.AddTypeHandler(new DateTimeOffsetHandler());

    public override void SetValue(IDbDataParameter parameter, DateTimeOffset value)
    {
        parameter.DbType = DbType.DateTimeOffset;
        parameter.Value = value.ToUniversalTime();
    }

    public override DateTimeOffset Parse(object value) => value switch
    {
        DateTime d => new DateTimeOffset(DateTime.SpecifyKind(d, DateTimeKind.Utc)),
        DateTimeOffset o => o,
        _ => throw new DataException($"cannot read {value.GetType()} as DateTimeOffset"),
    };
}
