import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { csvField, parseCsv } from '../../src/shared/csv.js';
import { parseManifest } from '../../src/enroll/device-manifest.js';
import { DomainError } from '../../src/shared/errors.js';

const fields = (text: string) => {
  const r = parseCsv(text);
  assert.equal(r.error, undefined, r.error?.message);
  return r.records.map((x) => x.fields);
};

describe('parseCsv', () => {
  it('splits plain records on LF, CRLF and CR, with or without a final line break', () => {
    assert.deepEqual(fields('a,b\n1,2\n'), [
      ['a', 'b'],
      ['1', '2'],
    ]);
    assert.deepEqual(fields('a,b\r\n1,2\r\n'), [
      ['a', 'b'],
      ['1', '2'],
    ]);
    assert.deepEqual(fields('a,b\r1,2'), [
      ['a', 'b'],
      ['1', '2'],
    ]);
    assert.deepEqual(fields('a,b\n1,2'), [
      ['a', 'b'],
      ['1', '2'],
    ]);
  });

  it('keeps empty fields, including leading and trailing ones', () => {
    assert.deepEqual(fields(',a,,b,\n'), [['', 'a', '', 'b', '']]);
    assert.deepEqual(fields('a,'), [['a', '']]);
  });

  it('reads quoted fields with commas, doubled quotes and line breaks', () => {
    assert.deepEqual(fields('"a,b","say ""hi""",c\n'), [['a,b', 'say "hi"', 'c']]);
    assert.deepEqual(fields('"two\r\nlines",x\nnext,y'), [
      ['two\r\nlines', 'x'],
      ['next', 'y'],
    ]);
    assert.deepEqual(fields('""\n'), [['']], 'a quoted empty field is a record, not a blank line');
    assert.deepEqual(fields('"",""'), [['', '']]);
  });

  it('drops a BOM and skips blank lines', () => {
    assert.deepEqual(fields('\uFEFFid\n\nx\r\n\r\ny\n\n'), [['id'], ['x'], ['y']]);
    assert.deepEqual(fields(''), []);
  });

  it('numbers the line each record starts on, counting breaks inside quotes', () => {
    const r = parseCsv('h\n"a\nb"\n\nc\n');
    assert.deepEqual(
      r.records.map((x) => x.line),
      [1, 2, 5],
    );
  });

  it('refuses an unterminated quote, a quote inside an unquoted field and text after a closing quote', () => {
    const open = parseCsv('id\nok\n"never closed,\nmore\n');
    assert.deepEqual(
      open.records.map((x) => x.fields),
      [['id'], ['ok']],
    );
    assert.equal(open.error?.record, 2);
    assert.equal(open.error?.line, 3);
    assert.match(open.error!.message, /not closed/);

    const inner = parseCsv('id\nab"c\n');
    assert.equal(inner.error?.record, 1);
    assert.match(inner.error!.message, /quote inside an unquoted field/);

    const after = parseCsv('"a"b,c\n');
    assert.equal(after.error?.record, 0);
    assert.match(after.error!.message, /after a closing quote/);
  });

  it('round-trips what csvField writes', () => {
    const values = ['plain', 'with,comma', 'with "quotes"', 'multi\nline', ' padded ', ''];
    assert.deepEqual(fields(values.map(csvField).join(',')), [values]);
  });
});

describe('parseManifest', () => {
  const badRequestErrors = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof DomainError && e.kind === 'BadRequest', String(e));
      return (e.details?.errors ?? []) as { row?: number; field?: string; message: string }[];
    }
    assert.fail('expected a BadRequest');
  };

  it('reads a CSV manifest: header names in any case or snake_case, labels.<key> columns, empty cells absent', () => {
    const csv =
      '\uFEFFID,Kind,model,hardware_revision,firmwareVersion,site,lot,labels.color\r\n' +
      'dev-1,client,"TH-200, outdoor",rev-B,1.4.2,plant-berlin,LOT-1,red\r\n' +
      'dev-2,,,,,,,\r\n';
    const m = parseManifest(csv, 'text/csv; charset=utf-8');
    assert.deepEqual(m.errors, []);
    assert.equal(m.lot, undefined);
    assert.deepEqual(m.devices, [
      {
        id: 'dev-1',
        kind: 'client',
        model: 'TH-200, outdoor',
        hardwareRevision: 'rev-B',
        firmwareVersion: '1.4.2',
        site: 'plant-berlin',
        lot: 'LOT-1',
        labels: { color: 'red' },
      },
      { id: 'dev-2' },
    ]);
  });

  it('reports CSV rows with the wrong number of fields by row and keeps the numbering', () => {
    const m = parseManifest('id,model\na,m\nb\nc,m,extra\nd,m\n', 'text/csv');
    assert.equal(m.devices.length, 4);
    assert.deepEqual(
      m.errors.map((e) => [e.row, e.id]),
      [
        [2, 'b'],
        [3, 'c'],
      ],
    );
    assert.equal(m.devices[3]!.id, 'd');
  });

  it('reports an unterminated quote at the row it starts', () => {
    const m = parseManifest('id\na\n"b\nc\n', 'text/csv');
    assert.deepEqual(
      m.errors.map((e) => e.row),
      [2],
    );
    assert.equal(m.devices.length, 2);
  });

  it('refuses a CSV without a usable header', () => {
    assert.equal(badRequestErrors(() => parseManifest('', 'text/csv'))[0]!.field, 'header');
    assert.deepEqual(
      badRequestErrors(() => parseManifest('model,site\nx,y\n', 'text/csv')).map((e) => e.field),
      ['id'],
    );
    assert.deepEqual(
      badRequestErrors(() => parseManifest('id,colour\nx,y\n', 'text/csv')).map((e) => e.field),
      ['colour'],
    );
    assert.deepEqual(
      badRequestErrors(() => parseManifest('id,ID\nx,y\n', 'text/csv')).map((e) => e.field),
      ['ID'],
    );
    assert.equal(badRequestErrors(() => parseManifest('"id\nx\n', 'text/csv'))[0]!.field, 'header');
  });

  it('reads JSON manifests as an object with a lot or as a bare array, from an object or a string', () => {
    assert.deepEqual(parseManifest({ lot: 'L', devices: [{ id: 'a' }] }, 'application/json'), {
      devices: [{ id: 'a' }],
      lot: 'L',
      errors: [],
    });
    assert.deepEqual(parseManifest([{ id: 'a' }], 'application/json'), { devices: [{ id: 'a' }], lot: undefined, errors: [] });
    assert.deepEqual(parseManifest('[{"id":"a"}]', 'application/json; charset=utf-8').devices, [{ id: 'a' }]);
    badRequestErrors(() => parseManifest('[{"id":', 'application/json'));
    badRequestErrors(() => parseManifest({ devices: 'nope' }, 'application/json'));
    assert.deepEqual(
      badRequestErrors(() => parseManifest({ devices: [], extra: 1 }, 'application/json')).map((e) => e.field),
      ['extra'],
    );
    badRequestErrors(() => parseManifest({ lot: 5, devices: [] }, 'application/json'));
    badRequestErrors(() => parseManifest('id\nx', 'text/plain'));
  });
});
