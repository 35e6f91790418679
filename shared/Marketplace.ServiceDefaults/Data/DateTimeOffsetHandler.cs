using System.Data;
using Dapper;

namespace Marketplace.ServiceDefaults.Data;

/// <summary>
/// Npgsql reads timestamptz as a UTC <see cref="DateTime"/>; our records speak <see cref="DateTimeOffset"/>, and Dapper
/// does not convert between them on its own. Writes go out in UTC: Npgsql refuses a non-zero offset for timestamptz.
/// </summary>
internal sealed class DateTimeOffsetHandler : SqlMapper.TypeHandler<DateTimeOffset>
{
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
