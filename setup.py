"Install openchatkit from settings.ini (nbdev 2 layout) without pkg_resources."
from configparser import ConfigParser
import shlex
from setuptools import setup, find_namespace_packages

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

def reqs(key): return shlex.split(cfg.get(key, '').replace('\n', ' '))

# settings.ini's nbdev name -> the SPDX expression (PEP 639: no License classifier next to it)
licenses = {'apache2': 'Apache-2.0'}
lic = licenses[cfg['license']]
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
scripts = [s.strip() for s in cfg.get('console_scripts', '').split('\n') if s.strip()]

setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], license_expression=lic, url=cfg['git_url'],
    keywords=cfg['keywords'].split(),
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])], 'Intended Audience :: ' + cfg['audience'],
                 'Natural Language :: ' + cfg['language'],
                 'Programming Language :: Python :: 3'],
    # assets/ and its sub-folders ship as data: namespace packages, so setuptools knows they are meant to be in the wheel
    packages=find_namespace_packages(include=['openchatkit', 'openchatkit.*'], exclude=['*.__pycache__']),
    include_package_data=True, package_data={'openchatkit': ['assets/**/*', 'assets/*']},
    python_requires='>=' + cfg['min_python'],
    install_requires=reqs('requirements'),
    extras_require={'dev': reqs('dev_requirements'), 'gpu': reqs('gpu_requirements')},
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
