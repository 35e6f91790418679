using System.Data;
using Dapper;

namespace Marketplace.Bidding.Data;

/// <summary>
/// Npgsql reads timestamptz as a UTC <see cref="DateTime"/>; the code speaks <see cref="DateTimeOffset"/>. Writes go
/// out in UTC because Npgsql refuses a non-zero offset for timestamptz.
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
        DateTime dt => new DateTimeOffset(DateTime.SpecifyKind(dt, DateTimeKind.Utc)),
        DateTimeOffset dto => dto,
        _ => throw new DataException($"cannot read {value.GetType()} as a DateTimeOffset"),
    };
}
