// Two runs of the persona suite side by side (evals/run --compare A B): each case's result,
// tokens and cost, and the totals.
import { readFileSync } from "node:fs";
import { join } from "node:path";

const [a, b] = process.argv.slice(2).map((dir) => JSON.parse(readFileSync(join(dir, "summary.json"), "utf8")));
const byCase = (s) => Object.fromEntries(s.lines.map((l) => [l.case, l]));
const [ca, cb] = [byCase(a), byCase(b)];
const rate = ([p, t]) => (t ? `${p}/${t}` : "skipped");
const out = [
  `| case | ${a.label} | ${b.label} |`,
  "|---|---|---|",
  ...Object.keys(ca).map((k) => `| ${k} | ${ca[k].pass ? "pass" : "FAIL"} · ${ca[k].tokens} tok · ${ca[k].cost} µ$ | ${cb[k]?.pass ? "pass" : "FAIL"} · ${cb[k]?.tokens} tok · ${cb[k]?.cost} µ$ |`),
  `| asked | ${rate(a.count.asked)} | ${rate(b.count.asked)} |`,
  `| got | ${rate(a.count.got)} | ${rate(b.count.got)} |`,
  `| graded | ${rate(a.count.graded)} | ${rate(b.count.graded)} |`,
];
console.log(out.join("\n"));
