/** Row blocks are defined by the storage layer that yields them; analyses import them from here. */
export * from '../storage/rows.js';
