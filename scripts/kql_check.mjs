// Parse and analyze KQL texts with Microsoft's own parser (Kusto.Language, npm
// @kusto/language-service-next) against the tables they query, so a typo, a missing
// column or a wrong function in a README example, an alert or a verification query is
// caught by the test suite instead of by the first person who runs it in Azure.
//
// stdin (JSON):
//   {"tables": {"Table": {"Column": "type", ...}, ...},
//    "functions": [{"name": "F", "parameters": "(x:long=5)", "body": "{ Table | ... }"}],
//    "queries": [{"name": "where it came from", "query": "KQL", "tables": {...optional}}]}
// Functions (the Sentinel parsers, _GetWatchlist) are declared in the same database as
// the tables, so a rule calling a parser gets the parser's result columns. Kusto.Language
// reports no error inside a function body at a call site: analyze each body on its own.
// Types are Kusto scalar types or the DCR stream vocabulary (boolean = bool).
// A query's own "tables" are added to the shared ones for that query only (a DCR
// transformKql reads its input stream as the table `source`).
// stdout (JSON): [{"name", "diagnostics": [{"severity", "code", "message", "offset", "length"}],
//                  "columns": {"Column": "type", ...} (the result's, when it is a table)}]
// Exit code 0 when every query was analyzed (whatever it found), 2 on bad input.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(import.meta.url);
// A Bridge.NET transpile: the runtime defines globals (Bridge, System), then the library
// defines the global `Kusto`.
require("@kusto/language-service-next/bridge.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.js");
const K = globalThis.Kusto.Language;
const S = K.Symbols;

const TYPES = {
  string: S.ScalarTypes.String,
  int: S.ScalarTypes.Int,
  long: S.ScalarTypes.Long,
  real: S.ScalarTypes.Real,
  double: S.ScalarTypes.Real,
  bool: S.ScalarTypes.Bool,
  boolean: S.ScalarTypes.Bool,
  datetime: S.ScalarTypes.DateTime,
  timespan: S.ScalarTypes.TimeSpan,
  guid: S.ScalarTypes.Guid,
  decimal: S.ScalarTypes.Decimal,
  dynamic: S.ScalarTypes.Dynamic,
};

function fail(message) {
  process.stderr.write(`kql_check: ${message}\n`);
  process.exit(2);
}

function table(name, columns) {
  const symbols = Object.entries(columns).map(([column, type]) => {
    const scalar = TYPES[String(type).toLowerCase()];
    if (!scalar) fail(`table ${name}: column ${column} has unknown type ${type}`);
    return new S.ColumnSymbol(column, scalar, null, null, null, null);
  });
  return new S.TableSymbol.$ctor4(name, symbols);
}

function func({ name, parameters, body }) {
  if (typeof name !== "string" || typeof parameters !== "string" || typeof body !== "string") {
    fail(`function ${name}: needs name, parameters and body strings`);
  }
  return new S.FunctionSymbol.$ctor16(name, parameters, body);
}

function globals(tables) {
  const symbols = Object.entries(tables).map(([name, columns]) => table(name, columns));
  for (const declared of input.functions || []) symbols.push(func(declared));
  return K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.$ctor2("workspace", null, symbols));
}

let input;
try {
  input = JSON.parse(readFileSync(0, "utf8"));
} catch (err) {
  fail(`stdin is not JSON: ${err.message}`);
}
if (!input || typeof input.tables !== "object" || !Array.isArray(input.queries)) {
  fail('expected {"tables": {...}, "queries": [...]}');
}

const shared = globals(input.tables);
const results = input.queries.map(({ name, query, tables }) => {
  const state = tables ? globals({ ...input.tables, ...tables }) : shared;
  const code = K.KustoCode.ParseAndAnalyze(query, state);
  const list = code.GetDiagnostics();
  const diagnostics = [];
  for (let i = 0; i < list.Count; i++) {
    const d = list.getItem(i);
    diagnostics.push({
      severity: d.Severity,
      code: d.Code,
      message: d.Message,
      offset: d.Start,
      length: d.Length,
    });
  }
  const columns = {};
  const result = code.ResultType;
  if (result && result.Columns) {
    for (let i = 0; i < result.Columns.Count; i++) {
      const column = result.Columns.getItem(i);
      columns[column.Name] = column.Type.Name;
    }
  }
  return { name, diagnostics, columns };
});
process.stdout.write(JSON.stringify(results));
