"""Built-in synthetic corpus for the RAG Gateway.

Generates deterministic, topic-coherent English passages entirely in code (no downloads), so the
gateway can be bootstrapped and benchmarked offline. Each topic has its own vocabulary, fact
templates and slot fillers; passages combine a random subset of facts in random order.

Usage:
    python scripts/synthetic_corpus.py --n 2000 --seed 0 --out corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from dataclasses import dataclass
from typing import TextIO

MIN_WORDS = 40
MAX_WORDS = 120


@dataclass(frozen=True)
class Topic:
    slug: str
    sources: tuple[str, ...]
    nouns: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]
    facts: tuple[str, ...]
    queries: tuple[str, ...]


# Topic data in a compact line format, parsed once at import time:
#   "= slug" starts a topic; "sources a|b" and "nouns a|b" list alternatives; "@slot a|b" defines a
#   slot filler list used as {slot} in facts ({noun} is the passage's subject noun); "- text" is a fact
#   template; "? text" is a natural sample query for the topic.
_DATA = """
= kubernetes
sources runbook|handbook|forum|blog
nouns kubernetes pod|deployment|cluster node|namespace|kubernetes service|ingress|kubelet
@obj pod|deployment|statefulset|daemonset|job
@cmd kubectl describe pod|kubectl logs --previous|kubectl get events|kubectl rollout status
@state CrashLoopBackOff|ImagePullBackOff|Pending|OOMKilled|Evicted
@res memory limit|CPU request|liveness probe|readiness probe|resource quota
@n 2|3|5|10
- A kubernetes {obj} stuck in {state} usually means the container keeps failing, so start with {cmd}.
- Running {cmd} shows the events and exit codes that explain why a kubernetes pod keeps restarting.
- If the {res} is set too low, the kubelet kills the container and the pod reports {state}.
- Rolling updates replace pods gradually; keep at least {n} replicas so the service stays available.
- A misconfigured {res} is one of the most common reasons a kubernetes pod never becomes ready.
- Namespaces isolate workloads in the cluster, and a resource quota caps memory and CPU per namespace.
- Use kubectl rollout undo to roll back a deployment when the new {obj} version keeps crashing.
- Node memory pressure can evict pods, so check node conditions before blaming the app for {state}.
- ConfigMaps and secrets are mounted into the pod, and a missing key makes the container crash on start.
- A readiness probe tells kubernetes when a pod may receive traffic, while a liveness probe restarts it.
- The horizontal pod autoscaler adds replicas when CPU usage stays above target for {n} minutes.
? why is my kubernetes pod in CrashLoopBackOff
? how to roll back a kubernetes deployment
? kubernetes pod keeps getting OOMKilled memory limit
? what does a readiness probe do in kubernetes

= redis
sources handbook|faq|blog|runbook
nouns redis cache|cache key|TTL|eviction policy|redis replica|redis cluster
@policy allkeys-lru|volatile-lru|allkeys-lfu|volatile-ttl
@ttl 60 seconds|five minutes|one hour|24 hours
@struct hash|sorted set|list|string|stream
@pattern cache-aside|read-through|write-through|write-behind
- Setting a TTL of {ttl} on each redis key keeps the cache from serving stale data forever.
- When maxmemory is reached, redis applies the {policy} eviction policy to decide which keys to drop.
- With {pattern} caching, the application reads from redis first and falls back to the database on a miss.
- A redis {struct} is a good fit when related cached fields must be read and updated together.
- A cache stampede happens when many clients miss the same expired key; add jitter to the TTL or a lock.
- Pipelining batches redis commands into one round trip, which lowers latency for bulk cache writes.
- Watch the cache hit ratio in INFO stats; a low hit ratio suggests a TTL of {ttl} is too short.
- Redis persistence with RDB snapshots or AOF protects cached data when the server restarts.
- Cache invalidation in redis is easier when keys are namespaced, for example user:42:profile.
- The {policy} policy makes redis evict keys based on how recently or frequently they were used.
- Setting an expiration on redis keys with EXPIRE or SET EX keeps memory usage of the cache bounded.
? how to set expiration TTL on redis cache keys
? which redis eviction policy should I use
? redis cache hit ratio is low
? how to prevent a cache stampede with redis

= python-packaging
sources handbook|faq|blog|forum
nouns python wheel|sdist|pyproject.toml|virtual environment|python dependency|package index|lock file
@tool pip|uv|poetry|hatch|setuptools|build
@file pyproject.toml|setup.cfg
@spec >=2.0,<3|~=1.4|==3.11.2
- Declare python package metadata and dependencies in pyproject.toml so {tool} can build a wheel.
- A python wheel is a prebuilt package archive, so installing it with {tool} skips the build step.
- Create a virtual environment before running pip install to keep each project's dependencies isolated.
- Pin a python dependency with a version specifier such as {spec} to avoid surprise upgrades.
- Use twine to publish the built wheel and sdist to PyPI after testing the upload on TestPyPI.
- The build backend named in {file} decides which files end up in the wheel and the sdist.
- A lock file generated by {tool} records exact versions, so every install of the package is reproducible.
- An editable install with pip install -e lets you change the package source without reinstalling.
- Entry points declared in pyproject.toml create console scripts when the python package is installed.
- A dependency conflict during pip install means two packages require incompatible versions.
- An sdist ships the python source, while a wheel is already built for a given platform and version.
? how to publish a python package to PyPI
? what is the difference between a wheel and an sdist
? how to pin python dependencies in pyproject.toml
? pip install dependency conflict in a virtual environment

= coffee
sources blog|faq|guide|forum
nouns espresso|pour-over coffee|french press|coffee grinder|coffee extraction|coffee roast
@method espresso|pour-over|french press|AeroPress|moka pot|cold brew
@grind fine|medium-fine|medium|coarse|extra coarse
@ratio 1:2|1:15|1:16|1:17
@temp 90|93|96
@time 30 seconds|three minutes|four minutes
- For {method} coffee, a {grind} grind size and a brew ratio of {ratio} is a reasonable starting point.
- The best grind size for espresso is fine, close to table salt, so a shot takes 25 to 30 seconds.
- Water at {temp} degrees Celsius extracts coffee evenly without scorching the grounds.
- Sour, weak coffee means under-extraction; grind finer or brew longer than {time}.
- Bitter coffee is a sign of over-extraction, so use a coarser grind size or a shorter brew time.
- A burr grinder produces uniform coffee grounds, which matters more than the brewer itself.
- Freshly roasted coffee beans need a few days to rest before they brew a balanced espresso with crema.
- Weigh the coffee and water on a scale; a {ratio} coffee to water ratio keeps every {method} consistent.
- Light roast coffee tastes bright and acidic, while dark roast coffee tastes heavy and more bitter.
- Store coffee beans in an airtight container away from light and grind them just before brewing.
- A french press needs a coarse grind and about four minutes of steeping before you press the plunger.
? best grind size for espresso
? why does my coffee taste bitter
? what coffee to water ratio for pour-over
? how long to brew french press coffee

= sourdough
sources blog|guide|forum|faq
nouns sourdough starter|levain|sourdough dough|crumb|crust|banneton|sourdough loaf
@flour whole wheat|rye|bread|all-purpose
@hyd 65|70|75|80
@hours 4|6|8|12
@temp 21|24|26
- Feed the sourdough starter equal weights of {flour} flour and water every {hours} hours to keep it alive.
- A healthy sourdough starter doubles within 4 to 8 hours after feeding and smells pleasantly sour.
- A sourdough dough at {hyd} percent hydration is easier to shape, though the crumb is tighter.
- Bulk fermentation at {temp} degrees Celsius takes about {hours} hours; look for a domed, bubbly dough.
- Stretch and folds during the first two hours of bulk fermentation build gluten strength in the dough.
- Proofing the shaped loaf overnight in a banneton in the fridge develops flavor and eases scoring.
- Bake sourdough bread in a preheated Dutch oven with the lid on to trap steam for a crisp crust.
- A starter that smells like acetone with grey liquid on top is hungry and needs feeding.
- Adding some {flour} flour to a sluggish starter speeds up fermentation thanks to extra nutrients.
- Dense, gummy sourdough bread usually means the loaf was underproofed or sliced before it cooled.
- Keep a sourdough starter alive in the fridge between bakes and feed it once a week.
? how do I keep a sourdough starter alive
? why is my sourdough bread dense
? how long should sourdough bulk fermentation take
? sourdough starter smells like acetone

= astronomy
sources blog|faq|guide|wiki
nouns telescope|planet|galaxy|nebula|night sky|moon|solar eclipse
@obj Jupiter|Saturn|the Andromeda Galaxy|the Orion Nebula|Mars|the Pleiades
@scope refractor telescope|Dobsonian telescope|Schmidt-Cassegrain telescope|pair of binoculars
@mag 30x|50x|100x|150x
- Through a small {scope} you can see {obj} on a clear, moonless night away from city lights.
- Light pollution hides faint galaxies, so travel to a dark site to observe the night sky.
- A beginner {scope} at {mag} magnification shows the rings of Saturn and the moons of Jupiter.
- Let your eyes adapt to the dark for twenty minutes before observing faint stars and nebulae.
- The phases of the moon depend on how much of its sunlit side faces Earth during its orbit.
- A total solar eclipse happens when the moon passes exactly between the sun and Earth.
- Use a star chart or planetarium app to find {obj}, which rises at a different time each month.
- Telescope aperture, not magnification, decides how faint a galaxy or nebula you can see.
- Meteor showers such as the Perseids peak when Earth crosses the debris trail left by a comet.
- Stars twinkle because the atmosphere bends their light, but planets appear as disks and shine steadily.
- The best time to see planets is near opposition, when they rise at sunset and stay up all night.
? what can I see with a beginner telescope
? when is the best time to see planets in the night sky
? why do stars twinkle but planets do not
? what causes a solar eclipse

= gardening
sources blog|guide|forum|faq
nouns vegetable garden|compost|seedling|garden soil|mulch|tomato plant|raised bed
@plant tomato plants|peppers|lettuce|zucchini|basil|carrots
@sun six|eight
@amend compost|aged manure|leaf mold|worm castings
@pest aphids|slugs|tomato hornworms|powdery mildew
- Most vegetables like {plant} need {sun} hours of direct sun to produce a good harvest in the garden.
- Work {amend} into the garden soil each spring to improve drainage and feed the plants.
- Water the vegetable garden deeply in the early morning so roots grow down and leaves dry by evening.
- A layer of mulch keeps garden soil moist, suppresses weeds and protects seedlings from heat.
- Yellow leaves on {plant} often point to overwatering or a lack of nitrogen in the soil.
- Remove {pest} by hand or spray insecticidal soap to protect plants without harming bees.
- Start {plant} seedlings indoors six weeks before the last frost, then harden them off outdoors.
- Raised beds warm up faster in spring and make it easier to improve soil in a home garden.
- Rotate vegetable crops each year so soil diseases and pests like {pest} do not build up.
- Prune suckers from tomato plants to improve airflow, which reduces leaf disease.
- Most garden vegetables need about an inch of water a week; water more often in sandy soil.
? why are my tomato plant leaves turning yellow
? how often should I water my vegetable garden
? how to improve garden soil with compost
? how to get rid of aphids on garden plants

= budgeting
sources blog|faq|guide|forum
nouns monthly budget|emergency fund|savings account|credit card debt|index fund|household expenses
@rule 50/30/20|zero-based|envelope|pay-yourself-first
@months three|six
@pct 10|15|20
@debt credit card|car loan|student loan|personal loan
- The {rule} budget method helps you decide where every dollar of monthly income goes.
- Build an emergency fund covering {months} months of expenses before investing heavily.
- Track every expense for a month; most people find surprise spending on subscriptions and takeout.
- Pay off the {debt} debt with the highest interest rate first, known as the avalanche method.
- Automate a transfer of {pct} percent of each paycheck into savings so you save money before spending.
- A high-yield savings account is a safe home for an emergency fund because the money stays available.
- Low-cost index funds are a simple way to invest for retirement once the monthly budget has room.
- The snowball method pays off the smallest {debt} balance first to build motivation.
- Review your budget every month and adjust categories when income or expenses change.
- Paying the full credit card balance each month avoids interest charges and keeps debt from growing.
- On a tight income, cutting fixed expenses like rent or insurance saves more money than skipping coffee.
? how to make a monthly budget
? how much should I save in an emergency fund
? best way to pay off credit card debt
? how to save money on a tight income

= cycling
sources guide|forum|blog|faq
nouns bike chain|derailleur|brake pads|bicycle tire|cassette|bike wheel
@part chain|rear derailleur|brake pads|cassette|bottom bracket
@psi 40|60|80|100
@lube wet lube|dry lube|wax
@km 300|500|1000
- Clean the bike chain and apply {lube} every {km} kilometers to keep shifting smooth and quiet.
- A chain checker shows when a bike chain has stretched and must be replaced before it wears the cassette.
- If bike gears keep skipping, turn the rear derailleur barrel adjuster a quarter turn at a time.
- Inflate bicycle tires to about {psi} psi; wider tires run lower pressure for comfort and grip.
- Squealing disc brakes are often caused by contaminated brake pads, which should be cleaned or replaced.
- To fix a flat tire, remove the tube, find the puncture, check the tire for thorns and patch the tube.
- Worn {part} make a bike noisy and inefficient, so inspect them during regular maintenance.
- Check spoke tension and true the bike wheel if the rim rubs against the brake pads.
- Tighten bolts on a carbon bike with a torque wrench to avoid cracking the frame.
- A bent derailleur hanger causes gears to skip even after careful cable adjustment.
- Carry a spare tube, tire levers and a mini pump on every ride to fix a flat bicycle tire quickly.
? how often should I lube my bike chain
? why do my bike gears keep skipping
? how to fix a flat bicycle tire
? bike disc brakes squealing

= photography
sources blog|guide|faq|forum
nouns aperture|shutter speed|ISO|camera exposure|histogram|camera lens
@f f/1.8|f/2.8|f/8|f/11|f/16
@ss 1/1000|1/250|1/60|1/15
@iso 100|400|1600|6400
@scene portraits|landscapes|sports|night skies|street scenes
- Exposure in photography depends on aperture, shutter speed and ISO, the so-called exposure triangle.
- A wide aperture like {f} blurs the background, which is why photographers use it for portraits.
- A shutter speed of {ss} second freezes or blurs motion; {scene} often need a fast shutter.
- Raising ISO to {iso} brightens the exposure in low light but adds noise, so night photos look grainy.
- Read the histogram rather than the camera screen; data pushed to the right edge means clipped highlights.
- Use exposure compensation to brighten snow scenes that the camera meter would underexpose.
- A narrow aperture such as {f} increases depth of field so {scene} stay sharp from front to back.
- Shooting raw keeps more shadow and highlight detail for correcting exposure later.
- Photos are blurry in low light when the shutter speed is too slow; use a tripod or raise ISO.
- Aperture priority mode lets you set {f} while the camera picks the shutter speed for correct exposure.
- A fast prime lens gathers more light, helping with low light photos and blurry backgrounds.
? how do aperture shutter speed and ISO affect exposure
? why are my photos blurry in low light
? best camera settings for portraits with a blurry background
? how to read a histogram in photography

= ml-evaluation
sources handbook|blog|wiki|faq
nouns validation set|test set|evaluation metric|precision|recall|cross-validation|baseline model
@metric precision|recall|F1 score|ROC AUC|accuracy|nDCG
@k 5|10
@split 80/10/10|70/15/15
@task classification|ranking|retrieval|regression
- Split the data {split} into training, validation and test sets, and evaluate on the test set once.
- {metric} is a common metric for {task} models, but always compare the model against a simple baseline.
- Accuracy is misleading on imbalanced classification; report precision, recall or the F1 score instead.
- Use {k}-fold cross-validation on small datasets to get a more stable estimate of model performance.
- Data leakage between training and test sets inflates evaluation metrics and hides overfitting.
- For {task}, inspect the confusion matrix or per-example errors, not just one aggregate metric.
- A large gap between training and validation scores shows the machine learning model is overfitting.
- Report confidence intervals or run several seeds, since evaluation metrics vary between runs.
- Precision is the share of predicted positives that are correct; recall is the share of positives found.
- Retrieval and ranking models are often evaluated with recall at {k} and nDCG on labelled queries.
- To evaluate a machine learning model fairly, tune hyperparameters on the validation set only.
? how to evaluate a machine learning model
? precision vs recall difference
? how to detect overfitting with a validation set
? what metric to use for imbalanced classification

= weather
sources wiki|faq|blog|handbook
nouns weather front|humidity|air pressure|thunderstorm|weather forecast|climate|jet stream
@cloud cumulonimbus|cumulus congestus
@front cold front|warm front|occluded front
@event heat waves|heavy rainfall|droughts|wildfires
- A {front} brings a change in temperature and often rain as warm and cold air masses meet.
- Tall {cloud} clouds signal strong rising air and can produce thunderstorms with lightning and hail.
- Falling air pressure on a barometer usually means stormy weather is approaching.
- High humidity makes hot weather feel hotter because sweat cannot evaporate easily.
- Climate describes long-term average weather, while a weather forecast covers the next few days.
- Climate change increases the frequency of extreme weather such as {event} in many regions.
- The jet stream steers storms and weather fronts across the mid-latitudes.
- Weather forecast models run on supercomputers, and their accuracy drops after about a week.
- Warm, moist air rising quickly into cooler, unstable air causes thunderstorms and heavy showers.
- Dew forms on clear, calm nights when air near the ground cools to its dew point.
- Rising air pressure usually brings clearing skies and calmer weather after a front passes.
? what causes thunderstorms
? difference between weather and climate
? what does falling air pressure mean for the weather
? how does climate change affect extreme weather

= first-aid
sources handbook|faq|guide
nouns first aid kit|CPR|burn|bleeding wound|sprain|choking|bandage
@minutes 10|15|20
@injury sprained ankle|twisted knee|strained wrist
@wound deep cut|bleeding wound|scraped knee
- For adult CPR, push hard and fast in the center of the chest at 100 to 120 compressions per minute.
- Cool a minor burn under cool running water for {minutes} minutes; do not apply ice or butter.
- Stop bleeding from a {wound} by pressing firmly on it with a clean cloth or bandage.
- Treat a {injury} with rest, ice, compression and elevation during the first two days.
- If an adult is choking and cannot speak, give five back blows followed by five abdominal thrusts.
- Call emergency services first, then start CPR if the person is unresponsive and not breathing.
- A basic first aid kit should hold bandages, gauze, gloves, antiseptic wipes and tape.
- After any serious injury, keep the person calm and watch for shock, such as pale, clammy skin.
- For a nosebleed, lean forward and pinch the soft part of the nose for {minutes} minutes.
- An automated external defibrillator gives spoken instructions and can be used during CPR by anyone.
- Clean a {wound} with water, cover it with a sterile bandage and watch for signs of infection.
? how to do CPR on an adult
? what to do for a minor burn
? how to stop bleeding from a deep cut
? first aid for a sprained ankle

= guitar
sources blog|forum|guide|faq
nouns guitar chord|fret|guitar string|capo|strumming pattern|guitar scale|tuner
@chord G|C|D|E minor|A minor
@tuning standard tuning|drop D|open G|DADGAD
@gauge 9|10|11|12
@scale minor pentatonic|major|blues|natural minor
- Beginners usually learn the {chord} chord early because it appears in so many easy guitar songs.
- The F barre chord is hard at first; press the strings close to the fret with your thumb behind the neck.
- Tune the guitar to {tuning} with a clip-on tuner before every practice session.
- Sore fingers are normal for new guitar players, and calluses form after a few weeks of practice.
- Practice chord changes slowly with a metronome, then speed up once transitions are clean.
- The {scale} scale is the first guitar scale many players use for soloing and improvisation.
- Light {gauge}-gauge guitar strings are easier on the fingers, while heavier strings sound fuller.
- A capo raises the pitch of every string so you can play in a new key with open chord shapes.
- Change guitar strings every few months or when they sound dull and won't stay in tune.
- A down, down, up, up, down, up strumming pattern fits many pop and folk songs on guitar.
- Easy beginner chords like {chord} use open strings, so the fingers hurt less than with barre chords.
? how to play the F barre chord on guitar
? easy guitar chords for beginners
? how often should I change guitar strings
? my fingers hurt when playing guitar

= chess
sources blog|guide|forum|wiki
nouns chess opening|pawn structure|knight|bishop|castling|gambit|center control
@opening Italian Game|Ruy Lopez|Sicilian Defense|Queen's Gambit|French Defense|London System
@move 1.e4|1.d4|1.c4|1.Nf3
@piece knights|bishops
@style solid|sharp|tactical|positional
- The {opening} is a popular chess opening that fights for control of the center.
- In the opening, develop your {piece} before the queen and castle early to keep the king safe.
- White often starts a chess game with {move}, staking a claim to the central squares.
- A gambit sacrifices a pawn in the opening to gain faster development or attacking chances.
- Beginners should learn chess opening principles rather than memorize long lines of the {opening}.
- The Sicilian Defense answers 1.e4 with c5, leading to sharp, unbalanced chess positions.
- Avoid moving the same piece twice in the opening unless it wins material or stops a threat.
- The {opening} suits chess players who prefer {style} positions and clear plans.
- Connecting the rooks after castling marks the end of the opening phase in chess.
- Study master games in your chosen opening to learn the typical pawn structures and plans.
- The Queen's Gambit offers a pawn that Black usually declines, keeping a solid center.
? best chess openings for beginners
? how to play the Sicilian Defense
? what are the basic chess opening principles
? is the Queen's Gambit a good opening

= marine-biology
sources wiki|blog|faq|handbook
nouns coral reef|plankton|octopus|kelp forest|whale|sea turtle|deep ocean
@animal octopus|sea turtle|humpback whale|clownfish|manta ray|dolphin
@zone sunlit zone|twilight zone|midnight zone
@threat ocean warming|ocean acidification|overfishing|plastic pollution
- Coral reefs cover a tiny share of the ocean floor yet shelter about a quarter of all marine species.
- Coral bleaching happens when warm ocean water makes corals expel the algae that feed them.
- The {animal} is a well-studied species in marine biology because of its unusual behavior.
- Phytoplankton drifting in the sunlit zone produce much of the world's oxygen through photosynthesis.
- {threat} is one of the biggest threats to coral reefs and other marine life.
- An octopus has three hearts, blue blood and skin that changes color in a fraction of a second.
- Kelp forests grow in cold, nutrient-rich coastal water and shelter fish and sea otters.
- Sea turtles return to the beach where they hatched to lay their eggs in the sand.
- Whales migrate thousands of kilometers between cold feeding grounds and warm breeding waters.
- Animals in the {zone} of the deep ocean have adapted to high pressure, cold and little light.
- Anglerfish, giant squid and gulper eels live in the deep ocean far below the reach of sunlight.
? why are coral reefs bleaching
? how many hearts does an octopus have
? what animals live in the deep ocean
? why do whales migrate

= railway-history
sources wiki|blog|handbook
nouns steam locomotive|railway|track gauge|railway station|viaduct|timetable|signal box
@loco Rocket|Flying Scotsman|Mallard|Big Boy
@country Britain|the United States|France|India|Germany
@era Victorian|nineteenth-century|early twentieth-century
- The Stockton and Darlington Railway opened in 1825 and carried passengers behind a steam locomotive.
- The steam locomotive {loco} is one of the most famous engines in railway history.
- The standard track gauge of 1,435 millimeters spread from Britain to most railways in the world.
- The first transcontinental railroad in the United States was completed in 1869.
- Railway timetables forced towns in {country} to adopt a standard time instead of local time.
- Railways transformed trade in {country} by moving coal, grain and goods quickly.
- Mallard set the world speed record for a steam locomotive in 1938 at 126 miles per hour.
- Japan opened the Shinkansen high-speed railway in 1964, starting a new era of rail travel.
- Signal boxes controlled points and signals with mechanical levers before electric signalling.
- {era} engineers built viaducts and tunnels to keep railway gradients gentle for steam locomotives.
- Heritage railways in {country} preserve old steam locomotives and stations for visitors.
? when was the first passenger railway opened
? history of steam locomotives
? why do railways use standard gauge track
? fastest steam locomotive ever

= sql-indexing
sources handbook|runbook|blog|forum
nouns database index|query plan|B-tree index|table scan|composite index|primary key
@db PostgreSQL|MySQL|SQLite|SQL Server
@col user_id|created_at|email|status
@idx B-tree|hash|covering|partial
- A {idx} index lets {db} find rows by {col} without a slow full table scan.
- Run EXPLAIN ANALYZE in PostgreSQL to see whether a slow SQL query uses an index or a sequential scan.
- In a composite index, column order matters: put columns used in equality filters first.
- Every extra database index speeds up reads but slows down inserts and updates on the table.
- A SQL query that wraps {col} in a function cannot use a plain index on that column.
- {db} creates an index automatically for the primary key and for unique constraints.
- A covering index includes every column the SQL query needs, so the database skips the table.
- Low-selectivity columns such as boolean flags rarely benefit from a B-tree index.
- Vacuum or rebuild tables periodically in {db} so index bloat does not slow down queries.
- Add an index on foreign key columns like {col} to speed up joins between tables.
- The query plan shows estimated rows and cost, revealing which index the database chose.
? why is my SQL query slow without an index
? how does composite index column order work
? how to read an EXPLAIN ANALYZE query plan in PostgreSQL
? do database indexes slow down inserts

= nutrition
sources blog|faq|guide
nouns protein|dietary fiber|vitamin|calorie|carbohydrate|whole grain|balanced diet
@food lentils|oats|salmon|eggs|Greek yogurt|almonds
@nutr protein|fiber|omega-3 fats|calcium
@plant lentils|spinach|beans|tofu
- A serving of {food} provides {nutr} and fits easily into a balanced diet.
- Most adults need 25 to 30 grams of fiber a day from whole grains, beans, fruit and vegetables.
- Adults need roughly 0.8 grams of protein per kilogram of body weight per day, more when training.
- Whole grain foods keep you full longer than refined carbohydrates because of their fiber.
- Vitamin C from fruit helps the body absorb iron from plant foods such as {plant}.
- A calorie deficit is needed to lose weight, but the diet should still supply enough protein.
- Drinking water instead of sugary drinks is one of the simplest nutrition changes.
- Fill half the plate with vegetables, a quarter with protein and a quarter with whole grains.
- Omega-3 fats in oily fish such as salmon support heart health as part of a balanced diet.
- Reading nutrition labels helps you compare sugar, salt, protein and fiber between foods.
- Foods high in fiber, such as {plant}, oats and berries, also help keep blood sugar steady.
? how much protein do I need per day
? healthy foods high in fiber
? how to build a balanced diet plate
? is a calorie deficit needed to lose weight

= hiking
sources guide|blog|forum|handbook
nouns hiking trail|hiking boots|trail map|blisters|ten essentials|altitude|day hike
@gear headlamp|map and compass|rain jacket|small first aid kit|water filter|extra food
@liters half a liter|one liter
@terrain mountain|desert|forest|alpine
- Pack the ten essentials, including a {gear}, even for a short day hike.
- Tell someone your hiking route and expected return time before heading onto the trail.
- Turn back if storms build over the {terrain} trail in the afternoon; summits can wait.
- Drink about {liters} of water per hour of hiking in hot weather, and more in {terrain} terrain.
- Prevent blisters with well-fitted hiking boots, wool socks and tape on hot spots.
- If you get lost while hiking, stop, stay calm, and use your map and compass or wait for rescue.
- Altitude sickness causes headache and nausea when hiking in the mountains; descend if it worsens.
- Stay on marked trails to protect plants and avoid getting lost in {terrain} terrain.
- Carry a {gear} on longer hikes, because conditions on the trail can change quickly.
- Hiking in a group is safer, and the slowest hiker should set the pace on the trail.
- Break in new hiking boots on short walks before a long day hike to avoid painful blisters.
? what should I pack for a day hike
? what to do if lost while hiking
? how to prevent blisters when hiking
? hiking safety tips in the mountains
"""


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split("|") if v.strip())


def _parse(data: str) -> tuple[Topic, ...]:
    topics: list[Topic] = []
    fields: dict[str, list[str]] = {}
    slots: dict[str, tuple[str, ...]] = {}
    slug = ""

    def flush() -> None:
        if slug:
            topics.append(
                Topic(
                    slug=slug,
                    sources=_split("|".join(fields["sources"])),
                    nouns=_split("|".join(fields["nouns"])),
                    slots=dict(slots),
                    facts=tuple(fields["-"]),
                    queries=tuple(fields["?"]),
                )
            )

    for raw in data.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key == "=":
            flush()
            slug, fields, slots = value.strip(), {"sources": [], "nouns": [], "-": [], "?": []}, {}
        elif key.startswith("@"):
            slots[key[1:]] = _split(value)
        elif key in fields:
            fields[key].append(value.strip())
        else:
            raise ValueError(f"unparseable corpus data line: {line!r}")
    flush()
    return tuple(topics)


_TOPICS: tuple[Topic, ...] = _parse(_DATA)
TOPICS: list[str] = [t.slug for t in _TOPICS]
SAMPLE_QUERIES: dict[str, list[str]] = {t.slug: list(t.queries) for t in _TOPICS}

_TITLES: tuple[str, ...] = (
    "A practical guide to {noun}",
    "Notes on {noun}",
    "Common questions about {noun}",
    "What to know about {noun}",
    "{Noun}: tips and pitfalls",
    "Getting started with {noun}",
    "Lessons learned about {noun}",
    "{Noun} explained",
)
_OPENERS: dict[str, tuple[str, ...]] = {
    "handbook": ("This section covers {noun}.", "Reference notes on {noun} follow."),
    "runbook": ("Operational notes on {noun}.", "Checklist items for {noun} are below."),
    "faq": ("A frequent question concerns {noun}.", "Short answers about {noun}:"),
    "blog": ("I have spent a lot of time with {noun} lately.", "Here is what I learned about {noun}."),
    "forum": ("Posting this in case it helps anyone dealing with {noun}.", "Quick reply about {noun}:"),
    "guide": ("This guide walks through {noun}.", "A few basics about {noun} first."),
    "wiki": ("Overview of {noun}.", "This article summarizes {noun}."),
}
_CLOSERS: dict[str, tuple[str, ...]] = {
    "handbook": ("See the related sections for more detail.",),
    "runbook": ("Escalate if the issue persists after these steps.",),
    "faq": ("Check the other answers for related questions.",),
    "blog": ("More on this in a later post.", "Let me know what works for you."),
    "forum": ("Hope this helps someone.", "Happy to answer follow-up questions."),
    "guide": ("Practice these steps until they feel routine.",),
    "wiki": ("See also the related articles.",),
}
_CONNECTORS: tuple[str, ...] = ("Tip:", "Note:", "Worth knowing:", "From experience:", "Remember:")
_FORMATTER = string.Formatter()


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(template: str, slots: dict[str, tuple[str, ...]], rng: random.Random, noun: str) -> str:
    values: dict[str, str] = {}
    for _, field, _, _ in _FORMATTER.parse(template):
        if field and field not in values:
            if field == "noun":
                values[field] = noun
            elif field == "Noun":
                values[field] = _cap(noun)
            else:
                values[field] = rng.choice(slots[field])
    return _cap(template.format(**values))


def _passage(idx: int, topic: Topic, rng: random.Random) -> dict[str, str]:
    source = rng.choice(topic.sources)
    noun = rng.choice(topic.nouns)
    title = _fill(rng.choice(_TITLES), topic.slots, rng, noun)
    sentences: list[str] = []
    if rng.random() < 0.6:
        sentences.append(_fill(rng.choice(_OPENERS[source]), topic.slots, rng, noun))
    words = sum(len(s.split()) for s in sentences)
    target = rng.randint(MIN_WORDS + 5, MAX_WORDS - 15)
    for template in rng.sample(topic.facts, len(topic.facts)):
        sentence = _fill(template, topic.slots, rng, noun)
        if rng.random() < 0.15:
            sentence = f"{rng.choice(_CONNECTORS)} {sentence}"
        n_words = len(sentence.split())
        if words + n_words > MAX_WORDS:
            continue
        sentences.append(sentence)
        words += n_words
        if words >= target:
            break
    closer = rng.choice(_CLOSERS[source])
    if rng.random() < 0.35 and words + len(closer.split()) <= MAX_WORDS:
        sentences.append(closer)
    text = " ".join(sentences)
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:  # pragma: no cover - guarded by topic data
        raise ValueError(f"passage for topic {topic.slug!r} has {len(text.split())} words")
    return {
        "id": f"syn-{idx:05d}",
        "title": title,
        "text": text,
        "topic": topic.slug,
        "source": source,
        "lang": "en",
    }


def generate(n: int = 2000, seed: int = 0) -> list[dict[str, str]]:
    """Return exactly ``n`` deterministic passages, balanced across ``TOPICS``."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = random.Random(seed)
    order = [_TOPICS[i % len(_TOPICS)] for i in range(n)]
    rng.shuffle(order)
    return [_passage(i, topic, rng) for i, topic in enumerate(order)]


def write_jsonl(passages: list[dict[str, str]], out: TextIO) -> None:
    out.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in passages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the built-in synthetic corpus as JSONL.")
    parser.add_argument("--n", type=int, default=2000, help="number of passages (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="output JSONL file (default stdout)")
    args = parser.parse_args(argv)
    passages = generate(n=args.n, seed=args.seed)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            write_jsonl(passages, f)
    else:
        write_jsonl(passages, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
