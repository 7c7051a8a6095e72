// Validate an AsyncAPI document with the real @asyncapi/parser.
// Usage: node validate.mjs FILE   (or "-" / nothing for stdin)
// Prints one JSON line describing what the parser understood (channels, parameters, messages, operations)
// plus its errors and warnings; exits 1 when the document is invalid.
import { readFileSync } from 'node:fs';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const arg = process.argv[2];
const text = !arg || arg === '-' ? readFileSync(0, 'utf8') : readFileSync(arg, 'utf8');

const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);

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
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.valid ? 0 : 1);
