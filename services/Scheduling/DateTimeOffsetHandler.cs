using System.Data;
using Dapper;

namespace Marketplace.Scheduling;

/// <summary>
/// Npgsql reads timestamptz as a UTC <see cref="DateTime"/>, and Dapper will not convert that to a
/// <see cref="DateTimeOffset"/> on its own: without this handler, records with DateTimeOffset members fail to
/// materialise (the shared due-work runner's DueItem among them). Belongs in ServiceDefaults; kept here until moved.
/// </summary>
internal sealed class DateTimeOffsetHandler : SqlMapper.TypeHandler<DateTimeOffset>
{
    public static void Register()
    {
        if (!SqlMapper.HasTypeHandler(typeof(DateTimeOffset))) SqlMapper.AddTypeHandler(new DateTimeOffsetHandler());
    }

    public override void SetValue(IDbDataParameter parameter, DateTimeOffset value) => parameter.Value = value.ToUniversalTime();

    public override DateTimeOffset Parse(object value) => value switch
    {
        DateTimeOffset d => d,
        DateTime d => new DateTimeOffset(DateTime.SpecifyKind(d, DateTimeKind.Utc)),
        _ => throw new DataException($"cannot read {value.GetType()} as a DateTimeOffset"),
    };
}
