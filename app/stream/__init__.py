"""The Faust application: the app factory, its patches to faust-streaming, sensors."""
