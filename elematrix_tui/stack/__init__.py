"""The bundled Matrix/Element stack: rendering (``render``) and the config doctor (``doctor``)."""
