"""Make the installed Synapse refuse every configuration (build step of a test image)."""

import pathlib

import synapse.config.server as server

path = pathlib.Path(server.__file__)
text = path.read_text()
anchor = '        self.server_name = config["server_name"]\n'
assert text.count(anchor) == 1, "ServerConfig.read_config changed: update this test image"
refusal = ('        raise ConfigError("this Synapse refuses to start (elematrix test image: '
           'a release that rejects this homeserver.yaml)", ("server_name",))\n')
path.write_text(text.replace(anchor, refusal + anchor))
