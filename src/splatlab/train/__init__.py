"""Training: one pure step (step.py) inside a run (run.py) that owns time, events and files.

    config.py    TrainConfig and its parts           state.py    TrainState (everything a resume needs)
    step.py      train_step: render, loss, Adam, densify          budget.py   the wall-clock plan
    run.py       Run: the loop, checkpoints, evaluation            outputs.py  the output folder
    events.py    typed events for subscribers        console.py / logging.py   subscribers
    strategy/    densification: default (3DGS ADC), mcmc           optim.py ops.py init.py schedule.py
"""
