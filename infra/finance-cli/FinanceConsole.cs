using System.Globalization;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace Marketplace.FinanceCli;

/// <summary>What a billing run produced, for callers (the demo) that want more than the printout.</summary>
public sealed record RunSummary(JsonNode Run, IReadOnlyList<JsonNode> Invoices, IReadOnlyList<JsonNode> Statements, JsonNode TrialBalance)
{
    public bool Balanced => (bool?)TrialBalance["balanced"] ?? false;
    public long SlaCredits => Statements.Sum(s => (long?)s["sla_credits"]?["amount"] ?? 0);
}

/// <summary>
/// Finance's billing commands, printed with Spectre.Console. The CLI (Program.cs) and the demo both call this class.
/// </summary>
public sealed class FinanceConsole(FinanceClient client, IAnsiConsole console)
{
    /// <summary>Runs the period with a progress bar (polling the run's progress while the run request is open), then prints
    /// the period's invoices, statements and the trial balance.</summary>
    public async Task<RunSummary> RunAsync(string period, CancellationToken ct)
    {
        JsonNode run = null!;
        await console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask($"billing run {period}", maxValue: 1);
                var request = client.RunPeriodAsync(period, ct);
                while (!request.IsCompleted)
                {
                    await Task.WhenAny(request, Task.Delay(TimeSpan.FromMilliseconds(250), ct));
                    if (request.IsCompleted) break;
                    if (await client.ProgressAsync(period, ct) is { } p && (int)p["leases_total"]! > 0)
                    {
                        task.MaxValue = (int)p["leases_total"]!;
                        task.Value = (int)p["leases_done"]!;
                        task.Description = $"billing run {period}: {(int)p["leases_done"]!}/{(int)p["leases_total"]!} leases";
                    }
                }
                run = await request;
                task.Description = $"billing run {period}: {(int?)run["leases_closed"] ?? 0} leases closed";
                task.Value = task.MaxValue;
            });

        var invoices = run["invoices"]!.AsArray().Select(n => n!).ToList();
        var statements = run["statements"]!.AsArray().Select(n => n!).ToList();
        var trial = await client.TrialBalanceAsync(ct);
        console.MarkupLineInterpolated($"[bold]Period {period}[/]: {(string?)run["status"]}, {(int?)run["leases_closed"] ?? 0} leases closed by this run");
        if ((int?)run["leases_waiting"] is > 0 and var waiting)
            console.MarkupLineInterpolated(
                $"[yellow]{waiting} lease(s) of the period wait for events that have not reached Billing yet (a start, an interruption or a resume); run the period again later to bill them.[/]");
        PrintInvoices(invoices);
        PrintStatements(statements);
        PrintTrialBalance(trial);
        return new RunSummary(run, invoices, statements, trial);
    }

    public async Task InvoicesAsync(CancellationToken ct) => PrintInvoices(await client.InvoicesAsync(ct));
    public async Task StatementsAsync(CancellationToken ct) => PrintStatements(await client.StatementsAsync(ct));
    public async Task TrialBalanceAsync(CancellationToken ct, bool all = false) => PrintTrialBalance(await client.TrialBalanceAsync(ct), all);

    public void PrintInvoices(IReadOnlyList<JsonNode> invoices)
    {
        var table = new Table().Title("Invoices").AddColumns("invoice", "renter", "status", "lease", "GPUs", "seconds", "down s",
            "unit price/h", "amount", "SLA credit");
        foreach (var invoice in invoices)
        {
            var first = true;
            foreach (var line in invoice["lines"]!.AsArray())
            {
                table.AddRow(first ? Short(invoice["id"]) : "", first ? Short(invoice["renter_org_id"]) : "", first ? Text(invoice["status"]) : "",
                    Short(line!["lease_id"]), $"{line["accelerator_count"]} × {line["accelerator_model"]}", Text(line["seconds"]),
                    Text(line["downtime_seconds"]), Money(line["unit_price"]), Money(line["amount"]), Money(line["sla_credit"]));
                first = false;
            }
            table.AddRow("", "", "", "", "", "", "", "[bold]subtotal[/]", Money(invoice["subtotal"]), "");
            table.AddRow("", "", "", "", "", "", "", "[bold]SLA credits[/]", "−" + Money(invoice["sla_credits"]), "");
            table.AddRow("", "", "", "", "", "", "", "[bold]total[/]", $"[bold]{Money(invoice["total"])}[/]", "");
            foreach (var credit in invoice["credit_lines"]?.AsArray() ?? [])
                table.AddRow("", "", "", Short(credit!["lease_id"]), $"[green]{Markup.Escape((string?)credit["description"] ?? "")}[/]",
                    "", "", "", "−" + Money(credit["amount"]), "");
        }
        console.Write(table);
    }

    public void PrintStatements(IReadOnlyList<JsonNode> statements)
    {
        var table = new Table().Title("Provider statements (gross − platform fee − SLA credits = net)")
            .AddColumns("statement", "provider", "gross", "platform fee", "SLA credits", "net", "payout", "transfer");
        foreach (var s in statements)
            table.AddRow(Short(s["id"]), Short(s["provider_org_id"]), Money(s["gross"]), Money(s["platform_fee"]), Money(s["sla_credits"]),
                $"[bold]{Money(s["net"])}[/]", Text(s["payout"]?["status"]), Text(s["payout"]?["transfer_id"]));
        console.Write(table);
        // Held payouts wait for the provider's payout account; say why once per reason.
        foreach (var reason in statements.Select(s => (string?)s["payout"]?["held_reason"]).OfType<string>().Distinct())
            console.MarkupLineInterpolated($"[yellow]payout held:[/] {reason}");
    }

    /// <summary>
    /// The trial balance: by default one row per kind of account and currency (every renter's available balance summed
    /// into <c>renter:*:available</c>, and so on, with how many accounts each row sums), which stays a screenful however
    /// many organisations there are; <paramref name="all"/> lists every account.
    /// </summary>
    public void PrintTrialBalance(JsonNode trial, bool all = false)
    {
        var accounts = trial["accounts"]!.AsArray()
            .Select(a => (Account: (string?)a!["account"] ?? "", Currency: (string)a["currency"]!, Balance: (long)a["balance"]!)).ToList();
        var rows = all
            ? accounts.Select(a => (a.Account, a.Currency, Count: 1, a.Balance)).ToList()
            : [.. accounts.GroupBy(a => (Kind: Kind(a.Account), a.Currency))
                .Select(g => (Account: g.Key.Kind, g.Key.Currency, Count: g.Count(), Balance: g.Sum(a => a.Balance)))
                .OrderBy(r => r.Account, StringComparer.Ordinal).ThenBy(r => r.Currency, StringComparer.Ordinal)];
        var table = new Table().Title(all ? "Trial balance" : "Trial balance (per kind of account; trial-balance --all lists each)")
            .AddColumns("account", "currency", "accounts", "balance");
        foreach (var r in rows)
            table.AddRow(Markup.Escape(r.Account), Markup.Escape(r.Currency), r.Count.ToString(CultureInfo.InvariantCulture), Amount(r.Balance, r.Currency));
        console.Write(table);
        var balanced = (bool?)trial["balanced"] ?? false;
        console.MarkupLine(balanced ? "[green]ledger balanced: every currency sums to zero[/]" : "[red]ledger NOT balanced[/]");
    }

    /// <summary>The kind of a ledger account: the organisation in <c>renter:{org}:available</c> becomes <c>*</c>.</summary>
    public static string Kind(string account)
    {
        var parts = account.Split(':');
        return parts.Length == 3 && Guid.TryParse(parts[1], out _) ? $"{parts[0]}:*:{parts[2]}" : account;
    }

    private static string Short(JsonNode? id) => ((string?)id ?? "")[..Math.Min(8, ((string?)id ?? "").Length)];
    private static string Text(JsonNode? n) => Markup.Escape(n?.ToString() ?? "");
    private static string Money(JsonNode? m) => m is null ? "" : Amount((long)m["amount"]!, (string)m["currency"]!);

    /// <summary>Minor units in the currency's own decimals (ISO 4217): 0 for JPY and friends, 3 for KWD and friends, else 2.</summary>
    public static string Amount(long minor, string currency)
    {
        var exponent = currency switch
        {
            "BIF" or "CLP" or "DJF" or "GNF" or "ISK" or "JPY" or "KMF" or "KRW" or "PYG" or "RWF" or "UGX" or "VND" or "VUV" or "XAF" or "XOF" or "XPF" => 0,
            "BHD" or "IQD" or "JOD" or "KWD" or "LYD" or "OMR" or "TND" => 3,
            _ => 2,
        };
        var value = minor / (decimal)Math.Pow(10, exponent);
        return value.ToString("N" + exponent, CultureInfo.InvariantCulture) + " " + currency;
    }
}
