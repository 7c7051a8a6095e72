// Validate an AsyncAPI document with the real @asyncapi/parser.
// Usage: node validate.mjs [--many] FILE   (or "-" / nothing for stdin)
// Prints one JSON line describing what the parser understood (channels, parameters, messages, operations)
// plus its errors and warnings; exits 1 when the document is invalid.
// --many: the input is a JSON array of documents; prints one JSON array of reports; exits 1 if any is invalid.
import { readFileSync } from 'node:fs';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const args = process.argv.slice(2);
const many = args[0] === '--many';
const arg = many ? args[1] : args[0];
const text = !arg || arg === '-' ? readFileSync(0, 'utf8') : readFileSync(arg, 'utf8');
const parser = new Parser();

async function validate(source) {
  const { document, diagnostics } = await parser.parse(source);
  const describe = (d) => ({ code: d.code, message: d.message, path: (d.path || []).join('/') });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(describe);
  const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).map(describe);
  const kafka = (model) => {
    const b = model.bindings().get('kafka');
    return b ? b.value() : null;
  };

  const result = { valid: document !== undefined && errors.length === 0, errors, warnings };
  if (document) {
    Object.assign(result, {
      asyncapi: document.version(),
      channels: document.channels().all().map((c) => ({
        id: c.id(),
        address: c.address(),
        parameters: c.parameters().all().map((p) => ({ id: p.id(), ...p.json() })),
        messages: c.messages().all().map((m) => m.name() || m.id()),
        kafka: kafka(c),
      })),
      messages: document.components().messages().all().map((m) => ({
        name: m.name() || m.id(),
        payloadType: m.hasPayload() ? m.payload().type() : null,
        payloadProperties: m.hasPayload() ? Object.keys(m.payload().properties() || {}) : [],
        headerProperties: m.hasHeaders() ? Object.keys(m.headers().properties() || {}) : [],
        kafka: kafka(m),
      })),
      operations: document.operations().all().map((o) => ({
        id: o.id(),
        action: o.action(),
        channels: o.channels().all().map((c) => c.address()),
        messages: o.messages().all().map((m) => m.name() || m.id()),
        kafka: kafka(o),
      })),
    });
  }
  return result;
}

if (many) {
  const reports = [];
  for (const doc of JSON.parse(text)) reports.push(await validate(JSON.stringify(doc)));
  process.stdout.write(JSON.stringify(reports) + '\n');
  process.exit(reports.every((r) => r.valid) ? 0 : 1);
} else {
  const result = await validate(text);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.valid ? 0 : 1);
}
