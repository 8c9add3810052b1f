// Handlers for the jobs converted from application.yml and application.properties: each ElasticJob
// class becomes a handler of the same name, and ShardingContext's getters become ctx's fields.
// Run: shardline agent --id worker-1 --handlers examples/elasticjob/handlers.mjs --allow-script echo

/** What ElasticJob's ShardingContext told a job, from Shardline's execution context. */
function shardingContext(ctx) {
  return {
    jobName: ctx.job, // the Shardline job name (billing-rollup for billingRollup)
    taskId: ctx.executionId,
    shardingTotalCount: ctx.shardCount,
    jobParameter: ctx.parameter,
    shardingItem: ctx.shard,
    shardingParameter: ctx.shardParameter,
  };
}

export default {
  "com.example.billing.BillingRollupJob"(ctx) {
    const context = shardingContext(ctx);
    ctx.log.info(context, "rolling up invoices");
    return context;
  },
  "com.example.billing.InvoiceExportJob"(ctx) {
    return shardingContext(ctx);
  },
  "com.example.orders.OrderSettlementJob"(ctx) {
    return shardingContext(ctx);
  },
};
