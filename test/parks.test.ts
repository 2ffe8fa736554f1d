import { describe, expect, it } from 'vitest';
import { parkFromRow, parkView } from '../connector/sync/parks.js';

describe('park view: the parks of one decision, as the table has them', () => {
  it('a row read is the park; a park asked for without a row is off with revoke, in no project', () => {
    const view = parkView([{ park_id: 'p1', project_id: 'proj', role_map: '{"r1":"cc"}', enabled: true, revoke_on_disable: false, disabled_at: null }], ['p1', 'p2']);
    expect(view('p1')).toMatchObject({ enabled: true, project_id: 'proj', role_map: { r1: 'cc' }, revoke_on_disable: false });
    expect(view('p2')).toMatchObject({ enabled: false, revoke_on_disable: true, project_id: '', gone: true });
    expect(view('p3')).toBeUndefined();
  });

  it('reads when sync was turned off, from a database row or an event row', () => {
    expect(parkFromRow({ park_id: 'p', project_id: 'x', enabled: false, disabled_at: new Date(5_000) }).disabled_at_ms).toBe(5_000);
    expect(parkFromRow({ park_id: 'p', project_id: 'x', enabled: false, disabled_at: '1970-01-01T00:00:06.000Z' }).disabled_at_ms).toBe(6_000);
    expect(parkFromRow({ park_id: 'p', project_id: 'x', enabled: true }).disabled_at_ms).toBeNull();
  });
});
