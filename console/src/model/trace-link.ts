/**
 * The link to an execution's trace: the controller's --trace-url-template (ControllerStatus's
 * trace_url_template) with `{traceId}` replaced by the execution's trace id; undefined when
 * either is missing, or the template has no `{traceId}`.
 */
export function traceUrl(template: string | undefined, traceId: string): string | undefined {
  if (template === undefined || template === "" || traceId === "" || !template.includes("{traceId}")) return undefined;
  return template.split("{traceId}").join(encodeURIComponent(traceId));
}
