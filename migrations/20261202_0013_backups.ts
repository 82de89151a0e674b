import type { Knex } from 'knex';

/**
 * Backups (Recover): one row per backup file the service wrote, so an operator (and a posture
 * report) can see when the last one was made and check a file against its digest. The file
 * itself lives under BACKUP_DIR; the row stays when the file is pruned (deleted_at). Additive only.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('backups', (t) => {
    t.text('id').primary();
    t.timestamp('created_at', { useTz: true }).notNullable(); // the snapshot's time
    t.text('created_by').notNullable();
    t.text('file_name').notNullable(); // under BACKUP_DIR (a restored backup: the name it was restored from)
    t.bigInteger('size_bytes').notNullable();
    t.binary('sha256').notNullable(); // of the whole file
    t.integer('format_version').notNullable();
    t.text('kek_id').notNullable();
    t.text('schema_version').notNullable(); // the newest migration the snapshot was taken at
    t.jsonb('row_counts').notNullable(); // { table: rows }
    t.text('origin').notNullable().defaultTo('created'); // created | restored (the backup this instance was restored from)
    t.timestamp('restored_at', { useTz: true });
    t.timestamp('deleted_at', { useTz: true }); // the file was pruned (BACKUP_KEEP)
    t.check("origin in ('created','restored')", [], 'backups_origin_check');
    t.check('octet_length(sha256) = 32', [], 'backups_sha256_check');
    t.index(['created_at', 'id'], 'backups_created_at_id_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('backups');
}
