using System.Text.Json;
using System.Text.Json.Serialization;
using Marketplace.Contracts;

namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>Maps outbox rows to contract types. Only records of the contracts assembly can be relayed.</summary>
public static class MessageTypes
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    private static readonly System.Reflection.Assembly Contracts = typeof(Money).Assembly;

    public static string NameOf(Type type) =>
        type.Assembly == Contracts ? type.FullName! : throw new ArgumentException($"{type} is not a message contract");

    public static Type Resolve(string name) =>
        Contracts.GetType(name, throwOnError: false) ?? throw new InvalidOperationException($"unknown message type {name}");
}
