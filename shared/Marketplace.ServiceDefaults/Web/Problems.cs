using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.ServiceDefaults.Web;

/// <summary>
/// RFC 9457 problem details with a stable <c>type</c> per error. The type URIs are the contract clients switch on;
/// the detail is a sentence a person can act on.
/// </summary>
public static class Problems
{
    public const string TypeBase = "https://docs.marketplace.local/problems/";

    public static ProblemHttpResult Of(int status, string slug, string title, string detail, IDictionary<string, object?>? extensions = null) =>
        TypedResults.Problem(detail: detail, statusCode: status, title: title, type: TypeBase + slug, extensions: extensions);

    public static ProblemHttpResult NotFound(string what, object id) =>
        Of(StatusCodes.Status404NotFound, "not-found", "Not found", $"There is no {what} with id {id} in your organisation.");

    public static ProblemHttpResult Conflict(string slug, string detail) =>
        Of(StatusCodes.Status409Conflict, slug, "Conflict", detail);

    public static ProblemHttpResult Forbidden(string detail) =>
        Of(StatusCodes.Status403Forbidden, "forbidden", "Forbidden", detail);

    public static ProblemHttpResult Unprocessable(string slug, string detail, IDictionary<string, object?>? extensions = null) =>
        Of(StatusCodes.Status422UnprocessableEntity, slug, "Unprocessable request", detail, extensions);

    public static ValidationProblem Invalid(IDictionary<string, string[]> errors) =>
        TypedResults.ValidationProblem(errors, title: "The request is not valid", type: TypeBase + "validation",
            detail: string.Join(" ", errors.SelectMany(e => e.Value.Select(m => $"{e.Key}: {m}"))));
}

/// <summary>Collects field errors; <see cref="Problem"/> is the 400 to return when any was found.</summary>
public sealed class Validation
{
    private readonly Dictionary<string, List<string>> _errors = new(StringComparer.Ordinal);

    public bool Failed => _errors.Count > 0;

    public Validation Require(bool condition, string field, string message)
    {
        if (!condition) Add(field, message);
        return this;
    }

    public Validation Add(string field, string message)
    {
        if (!_errors.TryGetValue(field, out var list)) _errors[field] = list = [];
        list.Add(message);
        return this;
    }

    public ValidationProblem Problem => Problems.Invalid(_errors.ToDictionary(e => e.Key, e => e.Value.ToArray()));
}
