import { it } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { pgliteTarget } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { createHttpHandler } from '../../src/main.js';

it('/readyz reflects the database: 200 while it answers, 503 problem+json once it is gone, /healthz unaffected', async () => {
  const svc = await makeService(pgliteTarget);
  const api = request(createHttpHandler(svc));
  assert.equal((await api.get('/readyz').expect(200)).body.status, 'ok');
  await svc.db.destroy();
  assertProblem(await api.get('/readyz'), 503, /database/);
  await api.get('/healthz').expect(200);
});
