//! The `aws::sts` namespace: who the credentials of the run belong to.

use rhai::plugin::*;

#[export_module]
pub mod sts_module {
    use crate::error::RhaiResult;
    use crate::host::Host;
    use rhai::Map;

    /// The caller identity of the credentials in use (STS GetCallerIdentity, asked once a run):
    /// `#{account, arn, user_id, partition}`; `partition` (`aws`, `aws-cn`, `aws-us-gov`, ...) is
    /// the second field of the caller's ARN, the partition of every ARN in that account.
    ///
    /// ```rhai
    /// let me = aws::sts::caller_identity();
    /// print(`running as ${me.arn} in ${me.account}`);
    /// let policy = `arn:${me.partition}:iam::aws:policy/AmazonS3FullAccess`;
    /// ```
    #[rhai_fn(return_raw)]
    pub fn caller_identity(ctx: NativeCallContext) -> RhaiResult<Map> {
        let host = Host::of(&ctx)?;
        let c = &*crate::aws::clients(&host)?;
        let id = crate::aws::identity(&host, c)?;
        let mut m = Map::new();
        m.insert("account".into(), id.account.into());
        m.insert("arn".into(), id.arn.into());
        m.insert("user_id".into(), id.user_id.into());
        m.insert("partition".into(), id.partition.into());
        Ok(m)
    }
}
