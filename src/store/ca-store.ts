import type { Executor } from './db.js';

export type CaKind = 'root' | 'intermediate';
export type CaStatus = 'awaiting-certificate' | 'active' | 'retired' | 'revoked';

export interface CaRow {
  id: string;
  name: string;
  parentId: string | null;
  kind: CaKind;
  status: CaStatus;
  keyAlgorithm: string;
  signerRef: string;
  pathLen: number | null;
  certificateDer: Buffer | null;
  csrDer: Buffer | null;
  externalChainPem: string | null;
  subjectDer: Buffer;
  keyId: Buffer;
  notBefore: Date | null;
  notAfter: Date | null;
  createdAt: Date;
}

const COLUMNS = [
  'id',
  'name',
  'parent_id',
  'kind',
  'status',
  'key_algorithm',
  'signer_ref',
  'path_len',
  'certificate_der',
  'csr_der',
  'external_chain_pem',
  'subject_der',
  'key_id',
  'not_before',
  'not_after',
  'created_at',
];

const bufOrNull = (v: unknown) => (v == null ? null : Buffer.from(v as Uint8Array));
const dateOrNull = (v: unknown) => (v == null ? null : new Date(v as string));

function fromRow(r: Record<string, unknown>): CaRow {
  return {
    id: r.id as string,
    name: r.name as string,
    parentId: (r.parent_id as string | null) ?? null,
    kind: r.kind as CaKind,
    status: r.status as CaStatus,
    keyAlgorithm: r.key_algorithm as string,
    signerRef: r.signer_ref as string,
    pathLen: r.path_len == null ? null : Number(r.path_len),
    certificateDer: bufOrNull(r.certificate_der),
    csrDer: bufOrNull(r.csr_der),
    externalChainPem: (r.external_chain_pem as string | null) ?? null,
    subjectDer: Buffer.from(r.subject_der as Uint8Array),
    keyId: Buffer.from(r.key_id as Uint8Array),
    notBefore: dateOrNull(r.not_before),
    notAfter: dateOrNull(r.not_after),
    createdAt: new Date(r.created_at as string),
  };
}

export class CaStore {
  async insert(db: Executor, ca: CaRow): Promise<void> {
    await db('cas').insert({
      id: ca.id,
      name: ca.name,
      parent_id: ca.parentId,
      kind: ca.kind,
      status: ca.status,
      key_algorithm: ca.keyAlgorithm,
      signer_ref: ca.signerRef,
      path_len: ca.pathLen,
      certificate_der: ca.certificateDer,
      csr_der: ca.csrDer,
      external_chain_pem: ca.externalChainPem,
      subject_der: ca.subjectDer,
      key_id: ca.keyId,
      not_before: ca.notBefore,
      not_after: ca.notAfter,
      created_at: ca.createdAt,
    });
  }

  async get(db: Executor, id: string): Promise<CaRow | undefined> {
    const r = await db('cas').select(COLUMNS).where({ id }).first();
    return r ? fromRow(r) : undefined;
  }

  /** Locks the row for the rest of the transaction (two imports of one CA cannot both win). */
  async getForUpdate(db: Executor, id: string): Promise<CaRow | undefined> {
    const r = await db('cas').select(COLUMNS).where({ id }).forUpdate().first();
    return r ? fromRow(r) : undefined;
  }

  async list(db: Executor): Promise<CaRow[]> {
    const rows = await db('cas')
      .select(COLUMNS)
      .orderBy([{ column: 'created_at' }, { column: 'id' }]);
    return rows.map(fromRow);
  }

  async count(db: Executor): Promise<number> {
    const [r] = await db('cas').count({ n: 'id' });
    return Number(r?.n ?? 0);
  }

  async completeImport(
    db: Executor,
    id: string,
    v: { certificateDer: Buffer; externalChainPem: string; notBefore: Date; notAfter: Date; pathLen: number | null },
  ): Promise<void> {
    await db('cas').where({ id, status: 'awaiting-certificate' }).update({
      certificate_der: v.certificateDer,
      external_chain_pem: v.externalChainPem,
      not_before: v.notBefore,
      not_after: v.notAfter,
      path_len: v.pathLen,
      status: 'active',
    });
  }

  /** active → retired; false when the CA was not active. */
  async retire(db: Executor, id: string): Promise<boolean> {
    const n = await db('cas').where({ id, status: 'active' }).update({ status: 'retired' });
    return Number(n) > 0;
  }

  /** active or retired → revoked; false when the CA was neither. */
  async markRevoked(db: Executor, id: string): Promise<boolean> {
    const n = await db('cas').where({ id }).whereIn('status', ['active', 'retired']).update({ status: 'revoked' });
    return Number(n) > 0;
  }

  /** The CA that replaces `caId` (its rollover that is not cancelled), if any. */
  async successorOf(ex: Executor, caId: string): Promise<string | undefined> {
    const r = await ex('ca_rollovers').select('to_ca').where({ from_ca: caId }).whereNot({ state: 'cancelled' }).first();
    return (r?.to_ca as string | undefined) ?? undefined;
  }
}
