import { describe, expect, it } from 'vitest';
import { createParkDirectory, parkFromRow } from '../connector/sync/parks.js';

const row = (version: number, enabled: boolean) => ({ park_id: 'p1', project_id: 'proj', role_map: '{"r1":"cc"}', enabled, revoke_on_disable: true, version: String(version) });

describe('park directory', () => {
  it('keeps the version committed last, whatever order the versions arrive in', () => {
    const parks = createParkDirectory();
    expect(parks.merge(parkFromRow(row(7, false)))).toBe(true);
    expect(parks.merge(parkFromRow(row(5, true)))).toBe(false);
    expect(parks.get('p1')).toMatchObject({ enabled: false, version: 7, role_map: { r1: 'cc' } });
    expect(parks.merge(parkFromRow(row(9, true)))).toBe(true);
    expect(parks.enabled().map((p) => p.park_id)).toEqual(['p1']);
  });

  it('a deleted row turns the park off with revoke; a later insert (a newer version) turns it on again', () => {
    const parks = createParkDirectory();
    parks.merge(parkFromRow(row(3, true)));
    parks.remove('p1', 3);
    expect(parks.get('p1')).toMatchObject({ enabled: false, revoke_on_disable: true });
    parks.merge(parkFromRow(row(2, true)));
    expect(parks.get('p1')!.enabled).toBe(false);
    parks.merge(parkFromRow(row(4, true)));
    expect(parks.get('p1')!.enabled).toBe(true);
  });

  it('an event from before versions existed loses to any versioned one', () => {
    const parks = createParkDirectory();
    parks.merge(parkFromRow(row(1, true)));
    const legacy = { ...row(0, false), version: undefined };
    expect(parks.merge(parkFromRow(legacy))).toBe(false);
  });
});
