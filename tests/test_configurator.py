"""configurator.py: nanoGPT's --key=value / config-file syntax, friendlier types, strict errors."""
import subprocess
import sys

import pytest

from configurator import ConfigError, configure
from conftest import ROOT


def settings():
    """A script's globals: typed settings with defaults, as the scripts declare them."""
    g = {'__annotations__': {'top_k': int | None, 'top_p': float}}
    g.update(init_from='resume', learning_rate=6e-4, max_iters=100, show_probs=False, top_k=200, top_p=1.0,
             start='\n', dtype='auto')
    return g


@pytest.mark.parametrize('arg,key,value', [
    ('--learning_rate=1', 'learning_rate', 1.0),        # int for a float
    ('--learning_rate=3e-5', 'learning_rate', 3e-5),
    ('--show_probs=true', 'show_probs', True),          # the course brief's spelling
    ('--show_probs=True', 'show_probs', True),
    ('--show_probs=FALSE', 'show_probs', False),
    ('--show_probs=1', 'show_probs', True),
    ('--top_k=None', 'top_k', None),                    # optional setting
    ('--top_k=0', 'top_k', 0),
    ('--max_iters=1e3', 'max_iters', 1000),
    ('--start=42', 'start', '42'),                      # any text is a prompt
    ('--start=Once upon a time', 'start', 'Once upon a time'),
    ('--start=a=b', 'start', 'a=b'),                    # only the first '=' splits
    ('--start="quoted"', 'start', 'quoted'),            # upstream unquotes Python literals
    ('--init_from=gpt2-xl', 'init_from', 'gpt2-xl'),
    ('--start=None', 'start', 'None'),                  # text, for a str setting that is not optional
])
def test_values_people_mean(arg, key, value):
    g = settings()
    configure(g, [arg])
    assert g[key] == value and type(g[key]) is type(value)


@pytest.mark.parametrize('arg,message', [
    ('--learning_rate=fast', "learning_rate='fast' is not a valid float"),
    ('--max_iters=2.5', "max_iters='2.5' is not a valid int"),
    ('--show_probs=maybe', "show_probs='maybe' is not a valid bool"),
    ('--show_probs=2', "show_probs='2' is not a valid bool"),
    ('--top_p=None', 'top_p cannot be None'),
    ('--max_iters=None', 'max_iters cannot be None'),
    ('--top_k=lots', "top_k='lots' is not a valid int or None"),
    ('--show_prob=True', "unknown config key: 'show_prob' .*did you mean show_probs"),
    ('--show_probs', 'has no value'),
    ('-x=1', 'settings are written --key=value'),
    ('config/missing.py', "config file 'config/missing.py' cannot be read"),
])
def test_errors_name_key_value_and_type(arg, message):
    with pytest.raises(ConfigError, match=message):
        configure(settings(), [arg])


def test_config_file_then_overrides_left_to_right(tmp_path):
    cfg = tmp_path / 'ft.py'
    cfg.write_text("import time\nlearning_rate = 3e-5\nmax_iters = 20\nstart = 'x' + str(max_iters)\n")
    g = settings()
    configure(g, ['--max_iters=5', str(cfg), '--learning_rate=1'])
    assert g['max_iters'] == 20 and g['learning_rate'] == 1.0 and g['start'] == 'x20'
    assert 'time' not in g  # modules a config file imports are not settings


def test_config_file_unknown_key_and_bad_type(tmp_path):
    (tmp_path / 'typo.py').write_text("learnign_rate = 1e-4\n")
    with pytest.raises(ConfigError, match="sets unknown key 'learnign_rate'"):
        configure(settings(), [str(tmp_path / 'typo.py')])
    (tmp_path / 'bad.py').write_text("max_iters = 'many'\n")
    with pytest.raises(ConfigError, match="config file .*bad.py.*max_iters='many' is not a valid int"):
        configure(settings(), [str(tmp_path / 'bad.py')])
    (tmp_path / 'broken.py').write_text("max_iters = 1/0\n")
    with pytest.raises(ConfigError, match='ZeroDivisionError'):
        configure(settings(), [str(tmp_path / 'broken.py')])


def test_command_line_error_is_one_line_and_exit_code_2(tmp_path):
    script = tmp_path / 's.py'
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom configurator import configure\n"
                      "lr = 0.1\nconfigure(globals())\nprint('lr', lr)\n")
    ok = subprocess.run([sys.executable, str(script), '--lr=1'], capture_output=True, text=True)
    assert ok.returncode == 0 and 'lr 1.0' in ok.stdout
    bad = subprocess.run([sys.executable, str(script), '--lr=x'], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: command line: lr='x' is not a valid float (the default is 0.1)"


def test_ignored_settings_are_accepted_but_not_set(tmp_path, capsys):
    """A script's IGNORED_SETTINGS (eval.py: sample.py's) are taken from the command line or a config
    file with a note, and never become settings; every other key is as strict as before."""
    g = settings()
    g['IGNORED_SETTINGS'] = ('num_samples', 'seed')
    cfg = tmp_path / 'sample_cfg.py'
    cfg.write_text("seed = 7\nmax_iters = 3\n")
    configure(g, ['--num_samples=5', '--num-samples=not a number', str(cfg), '--top_k=4'])
    assert 'num_samples' not in g and 'seed' not in g
    assert (g['max_iters'], g['top_k']) == (3, 4)
    out = capsys.readouterr().out
    assert "Ignoring: num_samples = '5'" in out and "Ignoring: seed = 7" in out
    with pytest.raises(ConfigError, match="unknown config key: 'num_sample'"):
        configure(g, ['--num_sample=5'])
