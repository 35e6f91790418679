using System.CommandLine;
using Marketplace.FinanceCli;
using Spectre.Console;

// marketplace finance CLI: billing runs, invoices, statements, exports. Talks to the public API through the gateway.
var gateway = new Option<string>("--gateway") { Description = "The gateway's base URL", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("MARKETPLACE_GATEWAY") ?? "http://127.0.0.1:8080" };
var apiKey = new Option<string>("--api-key") { Description = "A finance org's API key (or MARKETPLACE_API_KEY)", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("MARKETPLACE_API_KEY") ?? "" };
var period = new Option<string>("--period") { Description = "YYYY-MM or YYYY-MM-DD (UTC)", Required = true };
var format = new Option<string>("--format") { Description = "csv or json", DefaultValueFactory = _ => "csv" };
format.AcceptOnlyFromAmong("csv", "json");
var what = new Argument<string>("what") { Description = "invoices, statements or ledger" };
what.AcceptOnlyFromAmong("invoices", "statements", "ledger");
var output = new Option<FileInfo?>("--output", "-o") { Description = "Write to this file instead of the console" };

var root = new RootCommand("Marketplace finance: run billing periods and read invoices, statements and the ledger.");
foreach (var o in new Option[] { gateway, apiKey }) { o.Recursive = true; root.Options.Add(o); }

var run = new Command("run", "Close a billing period: invoices, statements with SLA credits, payouts; prints the trial balance.") { period };
run.SetAction((parse, ct) => WithConsoleAsync(parse, async c =>
{
    var summary = await c.RunAsync(parse.GetValue(period)!, ct);
    return summary.Balanced ? 0 : 2;
}));
var invoices = new Command("invoices", "List every invoice.");
invoices.SetAction((parse, ct) => WithConsoleAsync(parse, async c => { await c.InvoicesAsync(ct); return 0; }));
var statements = new Command("statements", "List every provider statement.");
statements.SetAction((parse, ct) => WithConsoleAsync(parse, async c => { await c.StatementsAsync(ct); return 0; }));
var allAccounts = new Option<bool>("--all") { Description = "List every account (by default: one row per kind of account and currency)" };
var trial = new Command("trial-balance", "The ledger's trial balance.") { allAccounts };
trial.SetAction((parse, ct) => WithConsoleAsync(parse, async c => { await c.TrialBalanceAsync(ct, parse.GetValue(allAccounts)); return 0; }));
var export = new Command("export", "Export invoices, statements or the ledger.") { what, format, output };
export.SetAction(async (parse, ct) =>
{
    using var client = new FinanceClient(parse.GetValue(gateway)!, parse.GetValue(apiKey)!);
    try
    {
        string text;
        if (parse.GetValue(format) == "csv") text = await client.ExportCsvAsync(parse.GetValue(what)!, ct);
        else text = System.Text.Json.JsonSerializer.Serialize(parse.GetValue(what) switch
        {
            "invoices" => (object)await client.InvoicesAsync(ct),
            "statements" => await client.StatementsAsync(ct),
            _ => await client.TrialBalanceAsync(ct),
        }, new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
        if (parse.GetValue(output) is { } file) await File.WriteAllTextAsync(file.FullName, text, ct);
        else Console.Out.Write(text);
        return 0;
    }
    catch (Exception ex) when (ex is FinanceApiException or HttpRequestException or ArgumentException)
    {
        Console.Error.WriteLine(ex.Message);
        return 1;
    }
});
foreach (var c in new[] { run, invoices, statements, trial, export }) root.Subcommands.Add(c);
return await root.Parse(args).InvokeAsync();

async Task<int> WithConsoleAsync(ParseResult parse, Func<FinanceConsole, Task<int>> action)
{
    using var client = new FinanceClient(parse.GetValue(gateway)!, parse.GetValue(apiKey)!);
    try
    {
        return await action(new FinanceConsole(client, AnsiConsole.Console));
    }
    catch (Exception ex) when (ex is FinanceApiException or HttpRequestException)
    {
        AnsiConsole.MarkupLineInterpolated($"[red]{ex.Message}[/]");
        return 1;
    }
}
