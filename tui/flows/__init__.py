"""What the app's keys and commands do, a module per part of the group's life.

Each module is a mixin of :class:`tui.app.HearthApp` over :class:`tui.flows.base.FlowBase`
(the app's few shared helpers). A flow that asks something pushes a screen from
:mod:`tui.screens` with a method as its ``submit`` or callback: the screen returns a
typed result (a :class:`tui.flows.base.Done` to say, a value picked), and no flow nests
closures to carry state from one step to the next.
"""
