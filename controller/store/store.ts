/**
 * The store port, as the stores implement it: declared by the controller core
 * (controller/core/store-port.ts), which never imports from a store package.
 */
export * from "../core/store-port.js";
