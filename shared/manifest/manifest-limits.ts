/**
 * The most bytes one manifest may hold, as sent in ApplyJob. The controller keeps every job's
 * manifest in memory and in its store, and sends it whole in every GetJob and ListJobs answer:
 * its --max-jobs jobs at this size are 2.5 GiB already. `shardline apply` checks it before
 * sending, so that a file of several documents is applied whole or not at all; the controller
 * checks it again for every other client. No flag changes it.
 */
export const MAX_MANIFEST_BYTES = 256 * 1024;

/** The limit as a refusal states it: `262144 bytes (256 KiB)`. */
export const MANIFEST_LIMIT_TEXT = `${MAX_MANIFEST_BYTES} bytes (${MAX_MANIFEST_BYTES / 1024} KiB)`;

/**
 * How both refusals of a manifest over MAX_MANIFEST_BYTES end: the limit cannot be raised, so
 * the way forward is a smaller manifest.
 */
export const MANIFEST_SIZE_ADVICE =
  "the limit is fixed (no flag raises it): move large data out of the manifest, e.g. into a ConfigMap, or a file or URL the job reads";
