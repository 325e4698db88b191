//! How domain values are spelled on the command line and in `QRLOGIN_*`
//! variables: clap's view of them, kept out of the domain types so that
//! `ticket` does not depend on the CLI.

use clap::ValueEnum;
use clap::builder::PossibleValue;

use crate::ticket::Provider;

/// `--providers` (`QRLOGIN_PROVIDERS`): the names of the contract, each
/// with the line `--help` shows for it.
impl ValueEnum for Provider {
    fn value_variants<'a>() -> &'a [Self] {
        &Provider::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Provider::Dev => {
                "The built-in phone page: anyone who opens it may log in. Development only"
            }
            Provider::WechatOauth => "Official Account OAuth inside WeChat's browser",
            Provider::WechatWeb => "Open Platform website application (WeChat's own QR)",
            Provider::WechatMp => "Official Account parametric QR with event push",
            Provider::Miniprogram => "The product's Mini Program scans the code",
            Provider::App => {
                "The product's own app scans the code and its backend drives the trusted API; \
                 the QR holds `QRLOGIN_APP_QR_URL`"
            }
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}
