"""``gps-eplb``'s analysis: from an engine's load statistics to EPLB settings (``docs/eplb.md``).

=================  ==============================================================================
module             what it holds
=================  ==============================================================================
``loads``          the pool's per-step loads from the recorded statistics (``pool_loads``)
``pricing``        the pricing seam (``price_slot_tokens``: the mechanism ledger and engine
                   profile) and the step-time model over per-layer load ratios
``replay``         loads on placements: busiest-GPU ratios under even and per-batch
                   (LPLB-style) dispatch over replicas
``schedules``      periodic rebalance schedules, the rebalance stall and transfer mode, the
                   window x interval curves and the loads' drift
``verdict``        speed-ups with ``gps``'s intervals and tie rule (``gps.advisor.uncertainty``,
                   in moving blocks of steps), the verdict and its tie
``analysis``       one pool's analysis (``analyse``; settings: ``gps.config.EplbConfig``)
``flags``          ready-to-paste SGLang and vLLM flags
=================  ==============================================================================
"""

from gps.advisor.eplb.analysis import analyse

__all__ = ["analyse"]
