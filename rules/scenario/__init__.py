"""The parts of the scenario runner (:mod:`rules.scenario_state`) and of scenario files
(:mod:`rules.scenarios`): the model, the parser, the events, the per-client record, the
contact policy and calendar triggers."""
